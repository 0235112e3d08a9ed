/* The C hello of bench/bench_cli.py: what a `run` costs when the program does nothing. */
#include <stdio.h>

int main(void) {
    puts("hello, world");
    return 0;
}
