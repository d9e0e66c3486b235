// SIGINT/SIGTERM: the first one asks the training loop to finish its step, checkpoint and exit 0;
// a second one exits at once (the user insisted).
#pragma once

namespace slim {
void install_stop_handlers();
bool stop_requested();
int stop_signal();  // the signal number that asked, 0 if none
}  // namespace slim
