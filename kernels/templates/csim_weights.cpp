// C-simulation only: where the firmware finds weights/*.txt (see csim_weights.h).
#include <string>

static std::string weights_dir;

extern "C" const char *faast_weights_dir() { return weights_dir.c_str(); }

extern "C" void faast_set_weights_dir(const char *dir) { weights_dir = dir; }
