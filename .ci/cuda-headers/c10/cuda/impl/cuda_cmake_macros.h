// Stand-in for the header a CUDA build of torch generates and the CPU wheel
// lacks, so .ci/run can syntax-check the CUDA glue (csrc/cuda/*.cpp) against
// the CPU wheel's headers on a machine with only nvcc. Never used in a build.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
