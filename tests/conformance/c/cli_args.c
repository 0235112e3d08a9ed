/* wasi:cli/environment.get-arguments through the adapter: argc and each argument,
 * byte for byte (argv[0] is the host's choice of program name, so it is not printed). */
// run: -- one "two words" "" ünïcode --flag=x
// run none:
#include "check.h"
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("argc: %d\n", argc);
    for (int i = 1; i < argc; i++) printf("argv[%d]: \"%s\" (%zu bytes)\n", i, argv[i], strlen(argv[i]));
    expect_true("argv[argc] is NULL", argv[argc] == NULL);
    expect_true("argv[0] is set", argc >= 1 && argv[0] != NULL);
    if (argc == 6) {
        expect_str("argv[1]", argv[1], "one");
        expect_str("argv[2]", argv[2], "two words");
        expect_str("argv[3]", argv[3], "");
        expect_str("argv[4]", argv[4], "\xc3\xbc" "n" "\xc3\xaf" "code");
        expect_str("argv[5]", argv[5], "--flag=x");
    } else {
        expect_int("argc", argc, 1);
    }
    return done();
}
