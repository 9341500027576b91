/**
 * inotify.h - watching a directory tree for saved, moved and deleted files.
 *
 * The fd is non-blocking; the caller polls it (the main thread in `serve`). Events are only a
 * hint: after draining them the caller rescans the tree, which is what makes the result right for
 * every way editors save (in place, write-then-rename, delete-and-recreate) and for new folders.
 * A file being created triggers nothing until it is closed after writing (IN_CLOSE_WRITE).
 */
#ifndef LUAGENT_INOTIFY_H
#define LUAGENT_INOTIFY_H

int lg_inotify_open(void);
/** Watch `dir` and every directory below it (adding a watch twice is harmless). */
void lg_inotify_watch_tree(int fd, const char *dir);
/** Read every pending event; returns 1 if any of them may change the tree's agents. */
int lg_inotify_drain(int fd);

#endif
