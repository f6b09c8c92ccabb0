// Batched C-simulation entry point of an hls4ml kernel: one call per batch instead of one per row.
// Each row goes through hls4ml's own generated float bridge (input conversion, the kernel top
// function, output conversion), so results are bit for bit those of hls4ml's predict().
// FAAST_TOP_FLOAT is the bridge's "<project>_float" function, set by the build.

extern "C" void FAAST_TOP_FLOAT(float *input, float *output);

extern "C" void faast_csim_run(float *inputs, float *outputs, long rows, long in_size, long out_size) {
    for (long row = 0; row < rows; ++row) {
        FAAST_TOP_FLOAT(inputs + row * in_size, outputs + row * out_size);
    }
}
