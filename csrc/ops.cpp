// Operator declarations for the emclassify native library.
//
// Every op is declared once here; CPU kernels live in csrc/cpu/, CUDA kernels in
// csrc/cuda/ (raw-pointer .cu files) with their dispatcher glue in .cpp files.
// The pure-PyTorch reference of each op is in emclassify/ (see emclassify/ops.py),
// which is both the fallback when this library is absent and the test oracle.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing emclassify._C loads this shared library, whose static initialisers
// register the ops below with the dispatcher; the module itself has no members.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "emclassify native ops (registered in torch.ops.emclassify)", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(emclassify, m) {
  // Ragged batch of 2-D images (uint8 | uint16 | float32), optional masks
  // (bool | uint8, same shape, nonzero = particle) -> float32 N x 1 x size x size.
  // mode: "surround" | "crop" | "mask"; normalize: "zscore" | "minmax" | "fixed".
  // Semantics: emclassify/preprocess.py (the reference).
  m.def(
      "preprocess(Tensor[] images, Tensor?[] masks, str mode, int size, int margin, "
      "str normalize, float mean, float std) -> Tensor");
  // Inference conv block: conv 3x3 stride 1 (padding 0 = valid, 1 = same) with
  // batch-norm folded into weight (Cout x Cin x 3 x 3) and bias (Cout), ReLU,
  // then 2x2 max-pool (floor) when pool. float32 N x Cin x H x W in, float32
  // N x Cout x H' x W' out in channels-last memory format.
  // Semantics: emclassify.ops.conv_block_reference.
  m.def("conv_block(Tensor x, Tensor weight, Tensor bias, int padding, bool pool) -> Tensor");
  // A chain of conv blocks (a LipNet trunk) in one call: layer i is
  // conv_block(h, weights[i], biases[i], paddings[i], pools[i]). Same result as
  // the chain of conv_block calls; runs image by image so activations stay in cache.
  // Semantics: emclassify.ops.conv_trunk_reference.
  m.def("conv_trunk(Tensor x, Tensor[] weights, Tensor[] biases, int[] paddings, bool[] pools) -> Tensor");
  // Training ops (CPU only; elsewhere the PyTorch layers run). Batch-norm with batch statistics
  // followed by ReLU: x float32 | bfloat16 N x C x H x W (channels-last is fastest), weight and
  // bias float32 C -> (y like x, batch mean float32 C, biased batch variance float32 C).
  // Semantics: emclassify.ops.bn_relu_train_reference. The backward takes what the forward
  // returned and gives (grad x, grad weight, grad bias).
  m.def("bn_relu_train(Tensor x, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "bn_relu_train_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor bias, Tensor mean, "
      "Tensor var, float eps) -> (Tensor, Tensor, Tensor)");
  // The same followed by 2x2 max-pool (floor): x N x C x H x W (H, W >= 2) -> (y N x C x H/2 x W/2
  // like x, mean, var, argmax uint8 like y: the window element that held the first maximum, 0..3
  // row-major, or 4 where the maximum is 0). Semantics: emclassify.ops.bn_relu_pool_train_reference.
  m.def("bn_relu_pool_train(Tensor x, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "bn_relu_pool_train_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor bias, Tensor mean, "
      "Tensor var, Tensor argmax, float eps) -> (Tensor, Tensor, Tensor)");
  // Dropout with probability p: (x * mask / (1 - p), mask bool like x), the mask drawn from a
  // counter-based hash of (seed, element index in x's memory order), whatever the thread count.
  // Semantics: emclassify.ops.dropout_reference (same distribution, not the same draws).
  m.def("dropout(Tensor x, float p, int seed) -> (Tensor, Tensor)");
  // Its backward: grad_y * mask * scale (scale = 1 / (1 - p)), like grad_y and in the mask's memory
  // order. Semantics: aten::native_dropout_backward.
  m.def("dropout_backward(Tensor grad_y, Tensor mask, float scale) -> Tensor");
  // Grey-scale reconstruction by dilation of seed under mask (float32 | float64 H x W, same shape and
  // dtype, finite, seed <= mask), 8-connected: the h-maxima step of the classical particle finder.
  // CPU only. Semantics: skimage.morphology.reconstruction(seed, mask, method="dilation"), through
  // emclassify.ops.reconstruct_by_dilation.
  m.def("reconstruct_by_dilation(Tensor seed, Tensor mask) -> Tensor");
  // 3 x 3 median of a float32 | float64 H x W finite image, the edge pixel repeated beyond the edge.
  // CPU only. Semantics: scipy.ndimage.median_filter(image, 3), through emclassify.ops.median3x3.
  m.def("median3x3(Tensor image) -> Tensor");
  // Exact Euclidean distance transform of a bool H x W mask holding at least one zero pixel: float64,
  // each nonzero pixel's distance to the nearest zero pixel (zero pixels 0). CPU only. Semantics:
  // scipy.ndimage.distance_transform_edt(mask), through emclassify.ops.distance_transform_edt.
  m.def("distance_transform_edt(Tensor mask) -> Tensor");
}
