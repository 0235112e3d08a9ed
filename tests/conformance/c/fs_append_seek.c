/* Append, seek and tell, positional reads and writes, holes, truncation. */
#include "check.h"
#include <sys/stat.h>

int main(void) {
    char buf[64];
    struct stat st;
    int fd = open("log.txt", O_CREAT | O_WRONLY | O_APPEND, 0644);
    expect("open O_APPEND", fd, 0);
    expect_int("write one", write(fd, "one\n", 4), 4);
    expect_int("lseek 0 SEEK_SET", lseek(fd, 0, SEEK_SET), 0);
    expect_int("write two (appends anyway)", write(fd, "two\n", 4), 4);
    expect_int("tell after an append", lseek(fd, 0, SEEK_CUR), 8);
    expect_int("fcntl F_GETFL has O_APPEND", (fcntl(fd, F_GETFL) & O_APPEND) != 0, 1);
    expect_int("fcntl F_GETFL is O_WRONLY", fcntl(fd, F_GETFL) & O_ACCMODE, O_WRONLY);
    close(fd);
    expect_str("log.txt", slurp("log.txt", buf, sizeof buf), "one\ntwo\n");
    fd = open("log.txt", O_WRONLY | O_APPEND);
    expect_int("append on reopen", write(fd, "three\n", 6), 6);
    expect("fcntl F_SETFL clears O_APPEND", fcntl(fd, F_SETFL, 0), 0);
    expect_int("lseek 0", lseek(fd, 0, SEEK_SET), 0);
    expect_int("write at 0 now overwrites", write(fd, "ONE", 3), 3);
    close(fd);
    expect_str("log.txt after F_SETFL", slurp("log.txt", buf, sizeof buf), "ONE\ntwo\nthree\n");

    fd = open("seek.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
    expect_int("write 10", write(fd, "0123456789", 10), 10);
    expect_int("tell", lseek(fd, 0, SEEK_CUR), 10);
    expect_int("SEEK_SET 3", lseek(fd, 3, SEEK_SET), 3);
    expect_int("read 2 at 3", read(fd, buf, 2), 2);
    buf[2] = 0;
    expect_str("bytes at 3", buf, "34");
    expect_int("SEEK_CUR -1", lseek(fd, -1, SEEK_CUR), 4);
    expect_int("SEEK_END -2", lseek(fd, -2, SEEK_END), 8);
    expect_int("read at 8", read(fd, buf, 10), 2);
    expect_int("read at the end", read(fd, buf, 10), 0);
    expect("SEEK_SET -1", lseek(fd, -1, SEEK_SET), EINVAL);
    expect("SEEK_CUR before the start", lseek(fd, -100, SEEK_CUR), EINVAL);
    expect("bad whence", lseek(fd, 0, 42), EINVAL);
    expect_int("SEEK_END +5 (past the end)", lseek(fd, 5, SEEK_END), 15);
    expect_int("write past the end", write(fd, "X", 1), 1);
    expect("fstat", fstat(fd, &st), 0);
    expect_int("size with a hole", st.st_size, 16);
    expect_int("pread 3 at 9", pread(fd, buf, 3, 9), 3);
    expect_int("hole reads as zeros", buf[1] == 0 && buf[2] == 0, 1);
    expect_int("pread leaves the offset", lseek(fd, 0, SEEK_CUR), 16);
    expect_int("pwrite at 0", pwrite(fd, "AB", 2, 0), 2);
    expect_int("pwrite leaves the offset", lseek(fd, 0, SEEK_CUR), 16);
    expect_int("pread past the end", pread(fd, buf, 4, 100), 0);
    expect("pread at a negative offset", pread(fd, buf, 4, -1), EINVAL);

    expect("ftruncate to 4", ftruncate(fd, 4), 0);
    expect("fstat", fstat(fd, &st), 0);
    expect_int("size after shrinking", st.st_size, 4);
    expect_int("offset stays past the end", lseek(fd, 0, SEEK_CUR), 16);
    expect("ftruncate to 100", ftruncate(fd, 100), 0);
    expect("fstat", fstat(fd, &st), 0);
    expect_int("size after growing", st.st_size, 100);
    expect("ftruncate to -1", ftruncate(fd, -1), EINVAL);
    expect_int("pread the kept bytes", pread(fd, buf, 4, 0), 4);
    buf[4] = 0;
    expect_str("kept bytes", buf, "AB23");
    close(fd);
    expect("truncate by path", truncate("seek.txt", 2), 0);
    expect("stat", stat("seek.txt", &st), 0);
    expect_int("size after truncate()", st.st_size, 2);
    expect("truncate a directory", truncate("dir", 0), EISDIR);
    expect("truncate missing", truncate("missing", 0), ENOENT);
    fd = open("file.txt", O_RDONLY);
    expect("ftruncate an O_RDONLY fd (Linux says EINVAL too)", ftruncate(fd, 0), EINVAL);
    close(fd);
    fd = open("dir", O_RDONLY);
    expect("lseek on a directory (the adapter refuses)", lseek(fd, 0, SEEK_CUR), EBADF);
    expect("read a directory fd (the adapter refuses)", read(fd, buf, 1), EBADF);
    close(fd);
    return done();
}
