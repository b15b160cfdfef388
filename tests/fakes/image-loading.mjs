// What `kind load docker-image` and `k3d image import` leave behind, shared by their stand-ins:
// the image in every node's container runtime, so that the kubelet lists it in the Node's
// status.images (names as containerd records them: docker.io/library/<name> for a bare name).

/** A reference as containerd names it: docker.io/ for a name without a registry, library/ for one without a path. */
export function fullImageName(ref) {
  const first = ref.split('/')[0];
  const hasRegistry = ref.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
  if (hasRegistry) return ref;
  return `docker.io/${ref.includes('/') ? ref : `library/${ref}`}`;
}

/** Adds the images to the status.images of the given nodes of state.kubectl.nodes. */
export function addNodeImages(state, nodeNames, refs) {
  for (const node of state.kubectl.nodes ?? []) {
    if (!nodeNames.includes(node.metadata.name)) continue;
    node.status = node.status ?? {};
    const images = (node.status.images = node.status.images ?? []);
    for (const ref of refs) {
      if (!images.some((i) => i.names?.includes(fullImageName(ref)))) images.push({ names: [fullImageName(ref)], sizeBytes: 52428800 });
    }
  }
}
