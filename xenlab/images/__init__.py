"""Image sets: Xen, Dom0 and DomU images from pinned Debian packages, in a content-addressed cache.

The first stage of the pipeline; it imports nothing of xenlab but `errors`
and `schema`.  Modules: `manifest` (the pinned recipe), `debs` (download,
verify, extract), `rootfs` and `cpio` (root file systems), `imageset` (the
build), `checks` (headers and kernel-config pitfalls), `imageformat` (boot
image headers), `cache`.
"""
