/* meterd dlq list | show ID | replay ID... | replay --all: the dead letters of the queue backend.
 */
#ifndef METERD_DLQ_CMD_H
#define METERD_DLQ_CMD_H

/* Runs `meterd dlq` with the process's argv (argv[1] is "dlq"). Returns the exit status:
 * 0 ok, 1 failed (unknown id, backend unreachable, replay refused or failed), 2 bad usage. */
int dlq_cmd_main(int argc, char **argv);

#endif
