/* Standard streams: interleaved stdout/stderr, large writes, partial lines, reading
 * stdin to its end, and what the streams are (pipes or files, not terminals here). */
// run: stdin='line one\nline two\n'
// run empty:
#include "check.h"
#include <stdlib.h>
#include <sys/stat.h>

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("out 1\n");
    fprintf(stderr, "err 1\n");
    printf("out partial ");
    fprintf(stderr, "err partial ");
    printf("out 2\n");
    static char big[200000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = 'a' + (i * 7) % 26;
    big[sizeof big - 1] = '\n';
    expect_int("write 200000 bytes to stdout", write(1, big, sizeof big), sizeof big);
    expect_int("write 0 bytes", write(1, big, 0), 0);

    char in[4096];
    size_t total = 0;
    ssize_t n;
    while ((n = read(0, in + total, sizeof in - 1 - total)) > 0) total += n;
    expect("read stdin to its end", n, 0);
    in[total] = 0;
    printf("stdin: %zu bytes: \"%s\"\n", total, in);
    expect_int("read after end", read(0, in, sizeof in), 0);

    struct stat st;
    expect("fstat(1)", fstat(1, &st), 0);
    expect_true("stdout is no directory", !S_ISDIR(st.st_mode));
    expect_int("isatty(0)", isatty(0), 0);
    expect_int("isatty(1)", isatty(1), 0);
    expect_int("isatty(2)", isatty(2), 0);
    expect("lseek(1)", lseek(1, 0, SEEK_CUR), ESPIPE);
    expect("write to stdin", write(0, "x", 1), EBADF);
    expect("read from stdout", read(1, in, 1), EBADF);
    fprintf(stderr, "err end\n");
    return done();
}
