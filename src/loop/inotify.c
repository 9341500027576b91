#include "luagent/inotify.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF)

int lg_inotify_open(void) { return inotify_init1(IN_NONBLOCK | IN_CLOEXEC); }

static void watch(int fd, const char *dir, int depth)
{
    if (inotify_add_watch(fd, dir, WATCH_MASK | IN_ONLYDIR) < 0 || depth >= 8)
        return;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            watch(fd, path, depth + 1);
    }
    closedir(d);
}

void lg_inotify_watch_tree(int fd, const char *dir) { watch(fd, dir, 0); }

int lg_inotify_drain(int fd)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    int relevant = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            /* a file just created is still empty: wait for its IN_CLOSE_WRITE */
            if (!(ev->mask & IN_CREATE) || (ev->mask & IN_ISDIR))
                relevant = 1;
            p += sizeof(*ev) + ev->len;
        }
    }
    return relevant;
}
