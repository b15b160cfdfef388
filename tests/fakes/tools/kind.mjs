// Stand-in `kind` (v0.32.0): only `kind load docker-image`, with that release's flags
// (pkg/cmd/kind/root.go: -v/--verbosity, -q/--quiet; pkg/cmd/kind/load/docker-image: -n/--name,
// --nodes). A kind cluster is the nodes of the scenario's state.kubectl.nodes whose providerID is
// kind://<provider>/<cluster>/<node> (what kind's kubeadm config sets); loading puts the image
// into each node's status.images. Errors as kind prints them ("ERROR: …", exit 1).
import { commandPath, flagTable, one, parseCommandLine } from '../common.mjs';
import { addNodeImages } from '../image-loading.mjs';

const GLOBAL = 'v/verbosity= q/quiet h/help';
const LOAD_DOCKER_IMAGE = 'n/name= nodes=';

/** The nodes of kind cluster `name` in the scenario. */
const clusterNodes = (state, name) =>
  (state.kubectl.nodes ?? []).filter((n) => n.spec?.providerID?.split('/')[3] === name && n.spec.providerID.startsWith('kind://')).map((n) => n.metadata.name);

export default function kind(argv, ctx) {
  const { state, err } = ctx;
  const { path } = commandPath(argv, { load: { 'docker-image': {} } }, flagTable(GLOBAL));
  if (path.join(' ') !== 'load docker-image') {
    err(`fake kind: command not played by the stand-in: ${argv.join(' ')}\n`);
    return 2;
  }
  const parsed = parseCommandLine(argv, flagTable(GLOBAL, LOAD_DOCKER_IMAGE));
  if (parsed.error) {
    err(`ERROR: ${parsed.error}\n`);
    return 1;
  }
  const images = [...new Set(parsed.positional.slice(2))];
  if (images.length === 0) {
    err('ERROR: a list of image names is required\n');
    return 1;
  }
  const missing = images.find((i) => !state.docker.images[i]);
  if (missing) {
    err(`ERROR: image: "${missing}" not present locally\n`);
    return 1;
  }
  const name = one(parsed.flags, 'name') ?? 'kind';
  const nodes = clusterNodes(state, name);
  if (nodes.length === 0) {
    err(`ERROR: no nodes found for cluster "${name}"\n`);
    return 1;
  }
  const wanted = one(parsed.flags, 'nodes')?.split(',') ?? nodes;
  const unknown = wanted.find((n) => !nodes.includes(n));
  if (unknown) {
    err(`ERROR: unknown node: "${unknown}"\n`);
    return 1;
  }
  for (const image of images) {
    for (const node of wanted) err(`Image: "${image}" with ID "${state.docker.images[image].id}" not yet present on node "${node}", loading...\n`);
  }
  addNodeImages(state, wanted, images);
  return 0;
}
