#include "train/signals.h"

#include <csignal>
#include <unistd.h>

namespace slim {
namespace {
volatile std::sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int sig) {
  if (g_stop_signal) {
    const char msg[] = "\nsecond stop signal: exiting without a checkpoint\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(130);
  }
  g_stop_signal = sig;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool stop_requested() { return g_stop_signal != 0; }
int stop_signal() { return g_stop_signal; }

}  // namespace slim
