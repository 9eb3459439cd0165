// How many of the kernels' per-row vector operations this x86 core issues per cycle, alone and
// mixed: the ceiling a small-batch tile can reach (docs/benchmarks.md, "what binds").
//
//     gcc -O2 -o /tmp/port_mix benchmarks/x86_port_mix.c && /tmp/port_mix
//
// Each loop body is independent instructions (fresh destinations, or 4+ accumulator chains), so
// throughput, not latency, is measured. Cycles come from a chain of dependent 64-bit multiplies (3
// cycles each on every x86 core since Sandy Bridge and Zen; a chain of adds runs faster than one
// per cycle on Intel's Golden Cove and later, which fold immediate adds at rename), timed on the
// thread's CPU clock.
#include <stdio.h>
#include <time.h>

#define N 10000000L

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cycle_seconds(void) {
    long a = 3;
    double t = now();
    for (long i = 0; i < N; i++) {
        __asm__ volatile("imul %0,%0\n imul %0,%0\n imul %0,%0\n imul %0,%0\n imul %0,%0\n imul %0,%0\n imul %0,%0\n imul %0,%0"
                         : "+r"(a));
    }
    return (now() - t) / (3 * 8.0 * N);
}

#define CLOBBER "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13"
#define LOOP(name, body)                                                          \
    static double name(void) {                                                    \
        double t = now();                                                         \
        for (long i = 0; i < N; i++) __asm__ volatile(body body body body ::: CLOBBER); \
        return (now() - t) / N / 4;                                               \
    }

// one activation row's share of a block: ggml's lane sums (vpmaddubsw, vpmaddwd), the convert,
// the row's scale into every lane (vpermilps) and the FMA into accumulator `a`
#define ROW(a, t)                                                                               \
    "vpmaddubsw %%ymm15, %%ymm14, %%ymm" #t "\n vpmaddwd %%ymm" #t ", %%ymm14, %%ymm" #t "\n" \
    " vcvtdq2ps %%ymm" #t ", %%ymm" #t "\n vpermilps $0x55, %%ymm15, %%ymm" #t "\n"          \
    " vfmadd231ps %%ymm" #t ", %%ymm15, %%ymm" #a "\n"
#define ROW_NO_SCALE(a, t)                                                                      \
    "vpmaddubsw %%ymm15, %%ymm14, %%ymm" #t "\n vpmaddwd %%ymm" #t ", %%ymm14, %%ymm" #t "\n" \
    " vcvtdq2ps %%ymm" #t ", %%ymm" #t "\n vfmadd231ps %%ymm" #t ", %%ymm15, %%ymm" #a "\n"
#define EIGHT(op) op " %%ymm15, %%ymm14, %%ymm4\n" op " %%ymm15, %%ymm14, %%ymm5\n" op " %%ymm15, %%ymm14, %%ymm6\n" \
    op " %%ymm15, %%ymm14, %%ymm7\n" op " %%ymm15, %%ymm14, %%ymm8\n" op " %%ymm15, %%ymm14, %%ymm9\n"               \
    op " %%ymm15, %%ymm14, %%ymm10\n" op " %%ymm15, %%ymm14, %%ymm11\n"

LOOP(t_maddubs, EIGHT("vpmaddubsw"))
LOOP(t_madd, EIGHT("vpmaddwd"))
LOOP(t_mul, EIGHT("vmulps"))
LOOP(t_sign, EIGHT("vpsignb"))
LOOP(t_padd, EIGHT("vpaddd"))
LOOP(t_rows, ROW(0, 4) ROW(1, 5) ROW(2, 6) ROW(3, 7))
LOOP(t_rows_no_scale, ROW_NO_SCALE(0, 4) ROW_NO_SCALE(1, 5) ROW_NO_SCALE(2, 6) ROW_NO_SCALE(3, 7))

int main(void) {
    const double c = cycle_seconds();
    printf("clock %.2f GHz\n", 1e-9 / c);
    const struct { const char * name; int ops; double (*f)(void); } cases[] = {
        {"vpmaddubsw alone", 8, t_maddubs},
        {"vpmaddwd alone", 8, t_madd},
        {"vmulps alone", 8, t_mul},
        {"vpsignb alone", 8, t_sign},
        {"vpaddd alone", 8, t_padd},
        {"4 rows: maddubs, madd, cvt, permilps, fma", 20, t_rows},
        {"4 rows: maddubs, madd, cvt, fma", 16, t_rows_no_scale},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const double cycles = cases[i].f() / c;
        printf("%-44s %.2f ops/cycle", cases[i].name, cases[i].ops / cycles);
        if (cases[i].ops > 8) printf(", %.2f cycles per row", cycles / 4);
        printf("\n");
    }
    return 0;
}
