/* outbox_cmd.h — `ferry outbox` (cli/outbox.c). */
#ifndef FERRY_OUTBOX_CMD_H
#define FERRY_OUTBOX_CMD_H

/* argv[0] is "outbox"; returns the process exit code. */
int outbox_main(int argc, char **argv);

#endif
