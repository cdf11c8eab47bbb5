/* The floor for benchmarks/guard.py: the least a fanotify permission responder can do.
 *
 * Marks the filesystem holding PATH for the guard's permission events and allows every open:
 * read a batch of events, write one allow per event, close its fd. No path, no stat, no cache.
 * What the guard adds on top of this is ours; what this costs is the kernel's and the
 * scheduler's round trip (the same loop fapolicyd runs before its rules, in C).
 *
 * Build: cc -O2 -o guard_floor guard_floor.c     Run (root): ./guard_floor PATH
 * Prints one line containing "ready" on stderr once the mark is in place; SIGTERM ends it
 * (the kernel allows whatever was pending when the group closes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/fanotify.h>
#include <unistd.h>

#ifndef FAN_OPEN_EXEC_PERM
#define FAN_OPEN_EXEC_PERM 0x00040000
#endif
#ifndef FAN_MARK_FILESYSTEM
#define FAN_MARK_FILESYSTEM 0x00000100
#endif

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH\n", argv[0]);
        return 2;
    }
    int fan = fanotify_init(FAN_CLOEXEC | FAN_CLASS_CONTENT, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
    if (fan < 0) {
        perror("fanotify_init");
        return 69;
    }
    if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                      FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM, AT_FDCWD, argv[1]) < 0) {
        perror("fanotify_mark");
        return 69;
    }
    fprintf(stderr, "guard_floor: ready\n");
    char buf[64 * 1024] __attribute__((aligned(8)));
    for (;;) {
        ssize_t len = read(fan, buf, sizeof buf);
        if (len < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            perror("read");
            return 1;
        }
        struct fanotify_event_metadata *event = (struct fanotify_event_metadata *)buf;
        for (; FAN_EVENT_OK(event, len); event = FAN_EVENT_NEXT(event, len)) {
            if (event->fd < 0)
                continue;
            if (event->mask & (FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM)) {
                struct fanotify_response response = {.fd = event->fd, .response = FAN_ALLOW};
                if (write(fan, &response, sizeof response) < 0)
                    perror("write");
            }
            close(event->fd);
        }
    }
}
