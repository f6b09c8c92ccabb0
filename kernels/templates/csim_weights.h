// Force-included into the C-simulation build of the hls4ml firmware (g++ -include). The firmware
// reads its weights from WEIGHTS_DIR on the first call; the build defines WEIGHTS_DIR as
// faast_weights_dir(), which the host sets when it loads the library, so a built model repository
// can be moved without recompiling.
#pragma once
extern "C" const char *faast_weights_dir();
