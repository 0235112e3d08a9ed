/* Terminals: isatty of each stdio stream, and what a terminal's descriptor reports.
 * Arguments: what isatty(0), isatty(1), isatty(2) must be (default 0 0 0: the corpus
 * runs with pipes; tests/test_wasi_conformance.py also runs it on a pseudo-terminal). */
#include "check.h"
#include <stdlib.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    char label[32];
    for (int fd = 0; fd < 3; fd++) {
        int want = argc > fd + 1 ? atoi(argv[fd + 1]) : 0;
        snprintf(label, sizeof label, "isatty(%d)", fd);
        expect_int(label, isatty(fd), want);
        struct stat st;
        snprintf(label, sizeof label, "fstat(%d)", fd);
        expect(label, fstat(fd, &st), 0);
        printf("fd %d: character device %d, fifo %d\n", fd, S_ISCHR(st.st_mode) != 0,
               S_ISFIFO(st.st_mode) != 0);
        snprintf(label, sizeof label, "lseek(%d)", fd);
        expect(label, lseek(fd, 0, SEEK_CUR), ESPIPE);
    }
    fprintf(stderr, "to stderr\n");
    return done();
}
