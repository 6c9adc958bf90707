/*
 * Minimal pod sandbox "pause" process for the test environment.
 *
 * No registry is reachable from CI, so we cannot pull registry.k8s.io/pause;
 * this is our own equivalent. As PID 1 of the pod it must (a) stay alive until
 * the runtime stops the sandbox with SIGTERM/SIGINT, and (b) reap zombies left
 * by processes in the shared PID namespace.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static void on_chld(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);

    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    sa.sa_handler = on_chld;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);

    for (;;) {
        pause();
    }
    return 0;
}
