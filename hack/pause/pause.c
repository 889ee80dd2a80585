/* Kubeloop's pod sandbox process. It holds the pod's namespaces open and does nothing else:
 * it sleeps until SIGINT or SIGTERM (then exits 0) and, as PID 1 of a shared PID namespace,
 * reaps every orphan that is re-parented to it. Built static: the image holds only this file. */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  static const char version[] = "kubeloop-pause 3.10\n";
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    return write(STDOUT_FILENO, version, sizeof version - 1) < 0;
  }
  struct sigaction on_stop = {.sa_handler = stop}, on_child = {.sa_handler = reap};
  on_child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGINT, &on_stop, NULL) || sigaction(SIGTERM, &on_stop, NULL) ||
      sigaction(SIGCHLD, &on_child, NULL)) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
