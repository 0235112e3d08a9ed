/* poll_oneoff: a timeout alone waits; stdout is writable; a file and a clock together;
 * what the adapter reports for files. */
#include "check.h"
#include <poll.h>
#include <time.h>

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

int main(void) {
    long long start = now_ms();
    expect_int("poll nothing with a 30ms timeout", poll(NULL, 0, 30), 0);
    expect_true("it waited 30ms", now_ms() - start >= 30);
    struct pollfd out[1] = {{1, POLLOUT, 0}};
    expect_int("poll stdout for writing", poll(out, 1, 1000), 1);
    expect_int("stdout writable", (out[0].revents & POLLOUT) != 0, 1);
    int fd = open("file.txt", O_RDONLY);
    struct pollfd f[1] = {{fd, POLLIN, 0}};
    start = now_ms();
    int n = poll(f, 1, 50);
    printf("poll a file for reading, 50ms timeout: %d, revents %d\n", n, f[0].revents);
    expect_true("it returned within 5s", now_ms() - start < 5000);
    struct pollfd w[1] = {{fd, POLLOUT, 0}};
    n = poll(w, 1, 0);
    printf("poll a read-only file for writing: %d, revents %d\n", n, w[0].revents);
    close(fd);
    struct pollfd bad[1] = {{99, POLLIN, 0}};
    n = poll(bad, 1, 0);
    printf("poll a closed fd: %d, revents %d\n", n, bad[0].revents);
    start = now_ms();
    struct timespec sleep = {0, 15000000};
    expect("nanosleep 15ms", nanosleep(&sleep, NULL), 0);
    expect_true("15ms passed", now_ms() - start >= 15);
    return done();
}
