/* kneewrapctl: the command-line tool (being written; this placeholder keeps the build whole). */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
        fprintf(stderr, "kneewrapctl: not written yet\n");
        return EXIT_FAILURE;
}
