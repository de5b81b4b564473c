// Stand-in for the header a CUDA build of torch generates and the CPU wheel
// lacks, so .ci/run can syntax-check the CUDA glue (csrc/cuda/*.cpp) against
// the CPU wheel's headers on a machine with only nvcc. Never used in a build.
// Why not the real headers: the CUDA build of torch 2.13.0 (the version emclassify builds against)
// is not available offline. Checked once (2026-11-28) against the only CUDA wheel on these machines,
// torch 2.14.1: its generated header defines exactly this macro, and csrc/cuda/*.cpp compiles
// against its full CUDA-enabled headers without this stand-in.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
