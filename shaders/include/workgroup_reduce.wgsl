// Included by the norm kernels (// @include workgroup_reduce): needs `scratch` and the
// defines SUBGROUPS and WORKGROUP_SIZE of the kernel that includes it.
// The sum of v over the workgroup, returned to every invocation.
fn reduce_sum(v: f32, lid: u32, sgid: u32, nsg: u32) -> f32 {
#if ${SUBGROUPS}
  let s = subgroupAdd(v);
  if (subgroupElect()) {
    scratch[sgid] = s;
  }
  workgroupBarrier();
  var total = 0.0;
  for (var i = 0u; i < nsg; i++) {
    total += scratch[i];
  }
  workgroupBarrier();
  return total;
#else
  scratch[lid] = v;
  workgroupBarrier();
  for (var stride = ${WORKGROUP_SIZE}u / 2u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) {
      scratch[lid] += scratch[lid + stride];
    }
    workgroupBarrier();
  }
  let total = scratch[0];
  workgroupBarrier();
  return total;
#endif
}
