"""Write a copy of runtime/forward.c that times each step of the forward pass.

Usage: profile_forward.py SRC_FORWARD_C OUT_C

Each step statement of block(), zq_forward() and the output head call is wrapped in a timer,
and the totals are printed to stderr when the program exits, separately for forward calls of
one token (decode) and of several (prefill). A decoded token on several threads runs on one
team (block_team and forward_one_team): there thread 0 gives each step the time since the end
of the step before. A step then includes the wait for the other threads at its end, and the
attention includes the cache writes that one thread makes before it. The start of the team
counts in the first layer norm, and its end after the head counts in no step. The clock is
CLOCK_MONOTONIC (wall time). When the copy is compiled with -DPROFILE_THREAD_CPU_TIME it is
the calling thread's CPU time, which on a shared machine leaves out the time other processes
hold the core. That clock suits 1-thread runs only, because it does not count the other
threads' work. bench/profile.sh builds and runs the copy.
"""
import re
import sys

# (pattern of a statement line, step name); a step may match several lines.
STEPS = [
    (r"layer_norm_rows\(", "layernorm"),
    # The products of proj and fc2 include the residual adds, fc's the activation: zq_linear_post
    # applies them as post-ops.
    (r"zq_linear\(k, &L->attn,", "matmul_qkv"),
    (r"zq_linear_post\(k, &L->proj,", "matmul_proj"),
    (r"zq_linear_post\(k, &L->fc,", "matmul_fc"),
    (r"zq_linear_post\(k, &L->fc2,", "matmul_fc2"),
    (r"store_kv\(", "attention"),
    (r"attention\(m, ws,", "attention"),
    (r"embed\(m, ids,", "embed"),
    (r"output_head\(m, ws,", "head"),
]

# Steps of the one-team decode path, timed by thread 0 from the end of the step before.
TEAM_STEPS = [
    (r"layer_norm\(ws->x,", "layernorm"),
    (r"zq_linear_team_run\(team, step\+\+, k, &L->attn,", "matmul_qkv"),
    (r"attend_one_team\(", "attention"),
    (r"zq_linear_team_run\(team, step\+\+, k, &L->proj,", "matmul_proj"),
    (r"zq_linear_team_run\(team, step\+\+, k, &L->fc,", "matmul_fc"),
    (r"zq_linear_team_run\(team, step\+\+, k, &L->fc2,", "matmul_fc2"),
    (r"zq_linear_team_run\(&team, step, m->kernels, &m->head,", "head"),
]
TEAM_FUNCTION = re.compile(r"static \w+ (block_team|forward_one_team)\(")

RUNTIME = r'''
#include <stdio.h>
#include <time.h>

#ifdef PROFILE_THREAD_CPU_TIME
#define PROFILE_CLOCK CLOCK_THREAD_CPUTIME_ID
#else
#define PROFILE_CLOCK CLOCK_MONOTONIC
#endif

static double profile_seconds[2][PROFILE_STEPS]; /* [0] decode, [1] prefill */
static long profile_calls[2];
static long profile_tokens[2];

static double profile_now(void)
{
    struct timespec ts;
    clock_gettime(PROFILE_CLOCK, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void profile_add(int step, int n, double seconds)
{
    profile_seconds[n > 1][step] += seconds;
}

/* The end of the last timed step (thread 0), where the next step of the one-team decode path
 * starts. */
static double profile_last;

static void profile_mark(int step)
{
    const double now = profile_now();
    profile_seconds[0][step] += now - profile_last;
    profile_last = now;
}

__attribute__((destructor)) static void profile_print(void)
{
    for (int p = 0; p < 2; p++) {
        double total = 0;
        for (int s = 0; s < PROFILE_STEPS; s++)
            total += profile_seconds[p][s];
        if (profile_calls[p] == 0)
            continue;
        fprintf(stderr, "profile %s: %ld forward calls, %ld tokens, %.4f s in the steps\n",
                p ? "prefill" : "decode", profile_calls[p], profile_tokens[p], total);
        for (int s = 0; s < PROFILE_STEPS; s++)
            fprintf(stderr, "  %-12s %9.4f s %5.1f%% %10.1f us/token\n", profile_names[s],
                    profile_seconds[p][s], 100 * profile_seconds[p][s] / total,
                    1e6 * profile_seconds[p][s] / (double)profile_tokens[p]);
    }
}
'''


def wrap_team_step(lines, start, step):
    """Appends a thread-0 mark to the statement that starts at lines[start]."""
    end = start
    while not lines[end].rstrip().endswith(";"):
        end += 1
    indent = lines[start][:len(lines[start]) - len(lines[start].lstrip())]
    lines[start] = indent + "{ " + lines[start].lstrip()
    lines[end] = (lines[end].rstrip() + f" if (omp_get_thread_num() == 0) profile_mark({step}); }}")
    return end


def instrument(src):
    names = list(dict.fromkeys(name for _, name in STEPS))
    found = set()
    lines = src.split("\n")
    in_team = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if TEAM_FUNCTION.match(line):
            in_team = True
        elif line == "}":
            in_team = False
        steps = TEAM_STEPS if in_team else STEPS
        for pattern, name in steps:
            if not re.match(pattern, stripped):
                continue
            step = "PROFILE_" + name.upper()
            if in_team:
                i = wrap_team_step(lines, i, step)
                found.add("team_" + name)
            elif stripped.endswith(";"):
                indent = line[:len(line) - len(line.lstrip())]
                lines[i] = (f"{indent}{{ const double profile_t0 = profile_now(); {stripped} "
                            f"profile_add({step}, n, "
                            f"(profile_last = profile_now()) - profile_t0); }}")
                found.add(name)
            break
        i += 1

    team_names = list(dict.fromkeys("team_" + name for _, name in TEAM_STEPS))
    missing = [n for n in names + team_names if n not in found]
    if missing:
        raise SystemExit("profile_forward: no statement found for: " + ", ".join(missing)
                         + "; update STEPS to the current runtime/forward.c")

    header = ("enum { " + ", ".join("PROFILE_" + n.upper() for n in names)
              + ", PROFILE_STEPS };\nstatic const char *const profile_names[] = {"
              + ", ".join(f'"{n}"' for n in names) + "};\n" + RUNTIME)
    text = "\n".join(lines)
    marker = '#include "model.h"\n'
    if marker not in text:
        raise SystemExit("profile_forward: '#include \"model.h\"' not found")
    text = text.replace(marker, marker + header, 1)
    entry = re.compile(r"(void zq_forward\([^)]*\)\n\{\n)")
    if not entry.search(text):
        raise SystemExit("profile_forward: the definition of zq_forward was not found")
    return entry.sub(r"\1    profile_calls[n > 1]++;\n    profile_tokens[n > 1] += n;\n", text, 1)


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: profile_forward.py SRC_FORWARD_C OUT_C")
    with open(sys.argv[1], encoding="utf-8") as f:
        text = instrument(f.read())
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
