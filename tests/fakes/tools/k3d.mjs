// Stand-in `k3d` (v5.9.0): only `k3d image import` (alias `load`), with that release's flags
// (cmd/root.go: --verbose, --trace, --timestamps; cmd/image/imageImport.go: -c/--cluster (repeatable,
// default k3s-default), -k/--keep-tarball, -t/--keep-tools, -m/--mode). A k3d cluster is the nodes of
// the scenario's state.kubectl.nodes named k3d-<cluster>-server-<n> or k3d-<cluster>-agent-<n>
// (k3d's container names, which k3s takes as node names); importing puts the image into each node's
// status.images. Messages as k3d's logrus lines (INFO/ERRO/FATA), exit 1 on failure.
import { all, commandPath, flagTable, one, parseCommandLine } from '../common.mjs';
import { addNodeImages } from '../image-loading.mjs';

const GLOBAL = 'verbose trace timestamps h/help';
const IMAGE_IMPORT = 'c/cluster= k/keep-tarball t/keep-tools m/mode=';
const MODES = ['auto', 'direct', 'tools-node'];

const clusterNodes = (state, name) =>
  (state.kubectl.nodes ?? []).map((n) => n.metadata.name).filter((n) => new RegExp(`^k3d-${name}-(server|agent)-\\d+$`).test(n));

export default function k3d(argv, ctx) {
  const { state, err } = ctx;
  const { path } = commandPath(argv, { image: { import: {}, load: {} } }, flagTable(GLOBAL));
  if (path[0] !== 'image' || path.length < 2) {
    err(`fake k3d: command not played by the stand-in: ${argv.join(' ')}\n`);
    return 2;
  }
  const parsed = parseCommandLine(argv, flagTable(GLOBAL, IMAGE_IMPORT));
  if (parsed.error) {
    err(`FATA[0000] ${parsed.error}\n`);
    return 1;
  }
  const mode = one(parsed.flags, 'mode') ?? 'tools-node';
  if (!MODES.includes(mode)) {
    err(`FATA[0000] Unknown image loading mode '${mode}'\n`);
    return 1;
  }
  const clusters = all(parsed.flags, 'cluster');
  const names = clusters.length ? clusters : ['k3s-default'];
  for (const name of names) {
    if (clusterNodes(state, name).length === 0) {
      err(`FATA[0000] failed to get cluster ${name}: No nodes found for given cluster\n`);
      return 1;
    }
  }
  const images = parsed.positional.slice(2);
  if (images.length === 0) {
    err('FATA[0000] No images specified!\n');
    return 1;
  }
  const missing = images.find((i) => !state.docker.images[i]);
  for (const name of names) {
    err(`INFO[0000] Importing image(s) into cluster '${name}'\n`);
    if (missing) {
      err(`ERRO[0000] Failed to import image(s) into cluster '${name}': failed to save image(s): Error response from daemon: No such image: ${missing}\n`);
      continue;
    }
    addNodeImages(state, clusterNodes(state, name), images);
  }
  if (missing) {
    err('WARN[0000] At least one error occured while trying to import the image(s) into the selected cluster(s)\n');
    return 1;
  }
  err(`INFO[0001] Successfully imported ${images.length} image(s) into ${names.length} cluster(s)\n`);
  return 0;
}
