/* meterd loadgen: HTTP load generator and ingest verifier for meterd. */
#ifndef METERD_LOADGEN_LOADGEN_H
#define METERD_LOADGEN_LOADGEN_H

/* Runs `meterd loadgen` with the process's argv (argv[1] is "loadgen"). Returns the exit
 * status: 0 ok, 1 errors or failed verification, 2 bad usage. */
int loadgen_main(int argc, char **argv);

#endif
