/* wasi:cli/environment.get-environment: exactly the variables the host was given,
 * nothing inherited; empty values and non-ASCII survive. */
// run: env=FOO=bar env=EMPTY= env=UNI=ünï env=WITH_EQ=a=b
// run none:
#include "check.h"
#include <stdlib.h>

extern char **environ;

int main(void) {
    int n = 0;
    for (char **e = environ; *e; e++) printf("env[%d]: %s\n", n++, *e);
    if (getenv("FOO")) {
        expect_int("count", n, 4);
        expect_str("FOO", getenv("FOO"), "bar");
        expect_str("EMPTY", getenv("EMPTY"), "");
        expect_str("UNI", getenv("UNI"), "\xc3\xbc" "n" "\xc3\xaf");
        expect_str("WITH_EQ", getenv("WITH_EQ"), "a=b");
    } else {
        expect_int("count", n, 0);
    }
    expect_true("PATH not inherited", getenv("PATH") == NULL);
    expect_true("HOME not inherited", getenv("HOME") == NULL);
    return done();
}
