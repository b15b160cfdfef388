// Host profiles for the stand-in tools: one scenario per kind of machine the platform runs on.
// Each is { scenario, env }: `scenario` is merged over defaultState() (tests/fakes/common.mjs),
// `env` is what the user's shell has set there. The facts come from the tools' sources and docs:
//   - `docker info`: OperatingSystem "Docker Desktop" / "OrbStack", Name "docker-desktop" /
//     "colima" / "orbstack" (the daemon's hostname); SecurityOptions holds "name=rootless" for
//     rootless Docker and for rootless Podman (containers/podman pkg/api/handlers/compat/info.go,
//     getSecOpts), whose OperatingSystem is the distribution and ServerVersion Podman's version;
//   - sockets: Docker Desktop ~/.docker/run/docker.sock (plus the /var/run/docker.sock link when
//     "Allow the default Docker socket" is on), Colima ~/.colima/default/docker.sock, OrbStack
//     ~/.orbstack/run/docker.sock, rootless Docker $XDG_RUNTIME_DIR/docker.sock with a "rootless"
//     context, rootless Podman $XDG_RUNTIME_DIR/podman/podman.sock through DOCKER_HOST;
//   - memory: Docker in a VM reports the VM's MemTotal (Docker Desktop's default on a 16 GB Mac is
//     an 8 GiB VM); Docker on Linux reports this machine's, under this machine's hostname.
import os from 'node:os';

const GiB = 1024 ** 3;
const MAC_HOME = '/Users/me';
/** Docker's default bridge network, which every engine has. */
const BRIDGE = { bridge: { name: 'bridge', labels: {}, subnet: '172.17.0.0/16' } };

const linuxInfo = {
  ServerVersion: '28.2.2',
  OSType: 'linux',
  OperatingSystem: 'Debian GNU/Linux 12 (bookworm)',
  // The same kernel and machine as the scripts: the hostname and MemTotal of this machine.
  Name: os.hostname(),
  NCPU: 8,
  MemTotal: os.totalmem(),
  DockerRootDir: '/var/lib/docker',
  SecurityOptions: ['name=apparmor', 'name=seccomp,profile=builtin', 'name=cgroupns'],
};

/** Docker Desktop on macOS: a VM with 8 GiB; the CLI uses the "desktop-linux" context. */
const dockerDesktopMac = (withVarRunLink) => ({
  scenario: {
    host: { os: 'darwin' },
    docker: {
      info: {
        ServerVersion: '28.3.2',
        OSType: 'linux',
        OperatingSystem: 'Docker Desktop',
        Name: 'docker-desktop',
        NCPU: 8,
        MemTotal: 8 * GiB - 180 * 1024 ** 2,
        DockerRootDir: '/var/lib/docker',
        SecurityOptions: ['name=seccomp,profile=unconfined', 'name=cgroupns'],
      },
      sockets: [
        { host: `unix://${MAC_HOME}/.docker/run/docker.sock`, access: 'ok' },
        ...(withVarRunLink ? [{ host: 'unix:///var/run/docker.sock', access: 'ok' }] : []),
      ],
      contexts: { 'desktop-linux': `unix://${MAC_HOME}/.docker/run/docker.sock` },
      currentContext: 'desktop-linux',
      networks: BRIDGE,
    },
  },
  env: {},
});

export const HOSTS = {
  'Linux, rootful Docker': {
    scenario: {
      host: { os: 'linux' },
      docker: { info: linuxInfo, networks: BRIDGE },
    },
    env: {},
  },
  'macOS, Docker Desktop (8 GiB VM)': dockerDesktopMac(true),
  'macOS, Docker Desktop without the /var/run/docker.sock link': dockerDesktopMac(false),
  'macOS, Colima (colima start --cpu 4 --memory 8)': {
    scenario: {
      host: { os: 'darwin' },
      docker: {
        info: {
          ServerVersion: '27.4.0',
          OSType: 'linux',
          OperatingSystem: 'Ubuntu 24.04.1 LTS',
          Name: 'colima',
          NCPU: 4,
          MemTotal: 8 * GiB - 300 * 1024 ** 2,
          DockerRootDir: '/var/lib/docker',
          SecurityOptions: ['name=apparmor', 'name=seccomp,profile=builtin', 'name=cgroupns'],
        },
        sockets: [{ host: `unix://${MAC_HOME}/.colima/default/docker.sock`, access: 'ok' }],
        contexts: { colima: `unix://${MAC_HOME}/.colima/default/docker.sock` },
        currentContext: 'colima',
        networks: BRIDGE,
      },
    },
    env: {},
  },
  'macOS, OrbStack': {
    scenario: {
      host: { os: 'darwin' },
      docker: {
        info: {
          ServerVersion: '28.0.1',
          OSType: 'linux',
          OperatingSystem: 'OrbStack',
          Name: 'orbstack',
          NCPU: 8,
          MemTotal: 12 * GiB,
          DockerRootDir: '/var/lib/docker',
          SecurityOptions: ['name=seccomp,profile=builtin', 'name=cgroupns'],
        },
        sockets: [{ host: `unix://${MAC_HOME}/.orbstack/run/docker.sock`, access: 'ok' }],
        contexts: { orbstack: `unix://${MAC_HOME}/.orbstack/run/docker.sock` },
        currentContext: 'orbstack',
        networks: BRIDGE,
      },
    },
    env: {},
  },
  'Linux, 16 GB laptop': {
    scenario: {
      host: { os: 'linux' },
      docker: { info: { ...linuxInfo, MemTotal: 16 * 10 ** 9 - 400 * 1024 ** 2 }, networks: BRIDGE },
    },
    env: {},
  },
};

/** Hosts where preflight must stop before anything is created (a test per host checks its message). */
export const STOPPING_HOSTS = {
  'Linux, rootless Docker': {
    scenario: {
      host: { os: 'linux' },
      docker: {
        info: { ...linuxInfo, DockerRootDir: '/home/me/.local/share/docker', SecurityOptions: ['name=seccomp,profile=builtin', 'name=rootless', 'name=cgroupns'] },
        sockets: [{ host: 'unix:///run/user/1000/docker.sock', access: 'ok' }],
        contexts: { rootless: 'unix:///run/user/1000/docker.sock' },
        currentContext: 'rootless',
        networks: BRIDGE,
      },
    },
    env: {},
  },
  'Linux, rootless Podman': {
    scenario: {
      host: { os: 'linux' },
      docker: {
        info: {
          ...linuxInfo,
          ServerVersion: '5.2.2',
          OperatingSystem: 'fedora',
          DockerRootDir: '/home/me/.local/share/containers/storage',
          SecurityOptions: ['name=seccomp,profile=default', 'name=rootless', 'name=selinux'],
        },
        sockets: [{ host: 'unix:///run/user/1000/podman/podman.sock', access: 'ok' }],
        networks: { podman: { name: 'podman', labels: {}, subnet: '10.88.0.0/16' } },
      },
    },
    env: { DOCKER_HOST: 'unix:///run/user/1000/podman/podman.sock' },
  },
  'Linux, socket permission denied': {
    scenario: {
      host: { os: 'linux' },
      docker: { info: linuxInfo, sockets: [{ host: 'unix:///var/run/docker.sock', access: 'denied' }], networks: BRIDGE },
    },
    env: {},
  },
  'Linux, another Talos cluster on 10.5.0.0/24': {
    scenario: {
      host: { os: 'linux' },
      docker: {
        info: linuxInfo,
        networks: {
          ...BRIDGE,
          'talos-default': { name: 'talos-default', labels: { 'talos.owned': 'true', 'talos.cluster.name': 'talos-default' }, subnet: '10.5.0.0/24' },
        },
      },
    },
    env: {},
  },
};
