/* Exit statuses: returning from main, exit(), _Exit, abort (a trap), and output that
 * was buffered when the program ended. wasi:cli/exit@0.2 carries only ok or err, so
 * any status but 0 ends as 1 on every host. */
// run zero: -- exit 0
// run one: status=1 -- exit 1
// run three: status=1 -- exit 3
// run return: status=1 -- return 7
// run underscore: status=1 -- _exit 5
// run abort: status=134 -- abort
// run buffered: -- buffered
#include "check.h"
#include <stdlib.h>

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "";
    int code = argc > 2 ? atoi(argv[2]) : 0;
    printf("ending with %s %d\n", how, code);
    fprintf(stderr, "to stderr before ending\n");
    if (strcmp(how, "exit") == 0) exit(code);
    if (strcmp(how, "return") == 0) return code;
    if (strcmp(how, "_exit") == 0) { fflush(stdout); _Exit(code); }
    if (strcmp(how, "abort") == 0) { fflush(stdout); abort(); }
    if (strcmp(how, "buffered") == 0) {
        setvbuf(stdout, NULL, _IOFBF, 1 << 16);
        for (int i = 0; i < 1000; i++) printf("buffered line %d\n", i);
        exit(0); /* exit flushes stdio */
    }
    printf("FAIL unknown way to end: %s\n", how);
    return 1;
}
