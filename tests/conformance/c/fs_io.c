/* Reads and writes in bulk: 2 MiB through write/read in odd-sized chunks, readv/writev.
 * The buffers are static: with Debian's wasi-libc (2022), growing the heap by megabytes
 * before the adapter's first file call trips an assertion inside the adapter on every host. */
#include "check.h"
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define SIZE (2 * 1024 * 1024 + 17)

int main(void) {
    static unsigned char data[SIZE], back[SIZE];
    for (size_t i = 0; i < SIZE; i++) data[i] = (unsigned char)(i * 2654435761u >> 13);
    int fd = open("bulk.bin", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    size_t done_bytes = 0, chunk = 1;
    while (done_bytes < SIZE) {
        size_t n = chunk < SIZE - done_bytes ? chunk : SIZE - done_bytes;
        ssize_t w = write(fd, data + done_bytes, n);
        if (w <= 0) { expect("write", w, 0); break; }
        done_bytes += w;
        chunk = chunk * 3 + 1;
        if (chunk > 300000) chunk = 4093;
    }
    expect_int("written", done_bytes, SIZE);
    close(fd);
    struct stat st;
    expect("stat", stat("bulk.bin", &st), 0);
    expect_int("size", st.st_size, SIZE);
    fd = open("bulk.bin", O_RDONLY);
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, back + got, 65537 < SIZE - got ? 65537 : SIZE - got)) > 0) got += r;
    expect("last read", r, 0);
    expect_int("read back", got, SIZE);
    expect_true("same bytes", memcmp(data, back, SIZE) == 0);
    close(fd);

    fd = open("vec.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
    /* the preview1 adapter moves one buffer per call (a short count, which POSIX allows) */
    struct iovec out[3] = {{"abc", 3}, {"", 0}, {"defgh", 5}};
    expect_int("writev moves the first buffer", writev(fd, out, 3), 3);
    expect_int("writev skips empty buffers", writev(fd, out + 1, 2), 5);
    char x[4], y[10];
    struct iovec in[2] = {{x, 3}, {y, 10}};
    expect_int("lseek", lseek(fd, 0, SEEK_SET), 0);
    expect_int("readv fills the first buffer", readv(fd, in, 2), 3);
    expect_int("readv of the rest", readv(fd, in + 1, 1), 5);
    x[3] = 0;
    y[5] = 0;
    expect_str("readv first", x, "abc");
    expect_str("readv second", y, "defgh");
    expect_int("pwritev-style pwrite", pwrite(fd, "Z", 1, 7), 1);
    close(fd);
    char buf[16];
    expect_str("vec.txt", slurp("vec.txt", buf, sizeof buf), "abcdefgZ");
    return done();
}
