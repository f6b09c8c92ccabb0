// The opening every engine source shares: host/fastpath.cpp and host/network_pass.cpp are compiled
// once per instruction set (setup.py, FAAST_ISA naming it), and everything they define lives in
// faast::FAAST_ISA's anonymous namespace, so no copy compiled for one ISA can be linked into another's
// callers. Included once, after the standard headers, by each engine source, which closes the
// namespaces at its end.

#ifndef FAAST_ISA
#error "setup.py compiles this file once per instruction set, with FAAST_ISA naming it"
#endif

namespace faast {
namespace FAAST_ISA {
namespace {

template <typename T>
inline T larger(T a, T b) { return a < b ? b : a; }  // std::max's, without instantiating it
template <typename T>
inline T smaller(T a, T b) { return b < a ? b : a; }  // std::min's
