"""Fake ``podman``, ``docker`` and ``systemctl`` for the unit tests of
edgecontainers-app-update (tests/unit/test_app_update_script.py; its fake
``logger`` is a line of sh written by the test).

One module plays every tool: the test writes a launcher per tool name that
calls ``main(NAME)``.  The state is the file $APP_UPDATE_STATE, in marshal
format (like the record of calls: a fake starts in half the time without the
import of json and re, and the script makes a few dozen calls per test):

  "podman": {"images": [{"id", "names", "readonly", "healthy"}],
             "containers": [{"name", "image", "image_name", "labels", "status", "health"}],
             "registry": {name: {"id", "healthy"}},
             "units": {unit: {"notify_healthy": bool}}}
  "docker": {"images": [{"id": "sha256:...", "names", "healthy"}],
             "containers": [{"id", "project", "service", "image", "status", "health"}],
             "registry": {name: {"id", "healthy"}}}

An image's "healthy" is what a container on it becomes when started: true
(healthy), False (unhealthy) or None (no health check); a docker image with
"wait_ok" true passes ``compose up --wait`` even when unhealthy (it turns
unhealthy just after the wait).  Archives given to ``load --input`` are JSON
lists of {"id", "names", "healthy", "wait_ok"}; registry entries are
{"id", "healthy", "wait_ok"}.

Every call is appended to $APP_UPDATE_CALLS as one marshalled dict {"prog",
"argv", "parent"}; "parent" is the command line of the calling process (the script,
or a subshell of it, which has the same command line), so a test can tell which
invocation of the script made a call.

Only the command lines and --format templates that the script uses are
understood; anything else fails loudly (exit 125, "fake ...: unsupported") so
that a change in the script fails a test instead of meeting a wrong answer.

The model, as far as the script depends on it:
  podman: names are unique within the writable store; a name is looked up in
  the writable store first, then in the read-only (additional) store; images
  in the read-only store cannot be tagged, untagged or removed.  ``systemctl
  restart UNIT`` recreates the unit's container from the image its image name
  points to now and, with Notify=healthy (the default), fails when that image
  is not healthy.
  docker: names are unique; ``compose up --wait`` recreates every service from
  the image its compose image name points to now and fails when one is not
  healthy.
"""

from __future__ import annotations

import marshal
import os
import sys

# podman 5 leaves State.Health out without a health check, like docker
PODMAN_HEALTH = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
DOCKER_HEALTH = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"


class Fail(Exception):
    def __init__(self, message: str, code: int = 125) -> None:
        super().__init__(message)
        self.code = code


def unsupported(prog: str, argv: list[str]) -> None:
    raise Fail(f"fake {prog}: unsupported: {argv!r}")


def options(argv: list[str], valued: set[str], flags: set[str], prog: str) -> tuple[dict[str, str], list[str]]:
    """Split argv into {option: value or ""} and positional arguments; unknown options fail."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in valued:
            if i + 1 >= len(argv):
                unsupported(prog, argv)
            opts[arg] = argv[i + 1]
            i += 2
        elif arg in flags:
            opts[arg] = ""
            i += 1
        elif arg.startswith("-"):
            unsupported(prog, argv)
        else:
            rest.append(arg)
            i += 1
    return opts, rest


def health_words(healthy: bool | None) -> str:
    return {True: "healthy", False: "unhealthy", None: ""}[healthy]


def load(store, args: list[str], argv: list[str], engine: str) -> None:
    """`podman load` / `docker load --quiet --input FILE`: the same for both engines."""
    opts, rest = options(args, {"--input"}, {"--quiet"}, engine)
    if rest or "--input" not in opts:
        unsupported(engine, argv)
    for image in read_archive(opts["--input"]):
        store.add(image)
        for name in image.get("names", []):
            print(f"Loaded image: {name}")


def read_archive(path: str) -> list[dict]:
    import json  # only here: an archive is written by hand in a test, readable

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise Fail(f"Error: payload does not match any of the supported image formats: {e}") from e


# ---------------------------------------------------------------- stores
class Store:
    """Images of one engine: lookup by id or name, tags moved between images."""

    def __init__(self, images: list[dict], prefix: str) -> None:
        self.images = images
        self.prefix = prefix  # "" (podman ids) or "sha256:" (docker ids)

    def bare(self, image_id: str) -> str:
        return image_id.removeprefix("sha256:")

    def by_id(self, ref: str) -> dict | None:
        want = self.bare(ref)
        if not 12 <= len(want) <= 64 or want.strip("0123456789abcdef"):
            return None
        found = [img for img in self.images if self.bare(img["id"]).startswith(want)]
        return found[0] if len(found) == 1 else None

    def resolve(self, ref: str) -> dict | None:
        img = self.by_id(ref)
        if img:
            return img
        ordered = [i for i in self.images if not i.get("readonly")] + [i for i in self.images if i.get("readonly")]
        return next((i for i in ordered if ref in i["names"]), None)

    def must(self, ref: str) -> dict:
        img = self.resolve(ref)
        if img is None:
            raise Fail(f"Error: {ref}: image not known", 1 if self.prefix else 125)
        return img

    def writable(self, img: dict, what: str) -> None:
        if img.get("readonly"):
            raise Fail(f"Error: {what} {img['id']}: image is in a read-only store")

    def add_name(self, img: dict, name: str) -> None:
        self.writable(img, "tagging")
        for other in self.images:
            if other is not img and not other.get("readonly") and name in other["names"]:
                other["names"].remove(name)
        if name not in img["names"]:
            img["names"].append(name)

    def add(self, image: dict) -> dict:
        """Load or pull an image: a new one goes to the writable store and takes its names."""
        image_id = image["id"]
        img = self.by_id(image_id)
        if img is None:
            img = {"id": image_id, "names": [], "readonly": False, "healthy": image.get("healthy", True)}
            if image.get("wait_ok"):
                img["wait_ok"] = True
            self.images.append(img)
        for name in image.get("names", []):
            if name not in img["names"] or not img.get("readonly"):
                self.add_name(img, name)
        return img


# ---------------------------------------------------------------- podman
def podman(state: dict, argv: list[str]) -> None:
    st = state["podman"]
    store = Store(st["images"], "")
    if not argv:
        unsupported("podman", argv)
    cmd, args = argv[0], argv[1:]
    if cmd == "image" and args[:1] == ["inspect"]:
        opts, refs = options(args[1:], {"--format"}, set(), "podman")
        if opts.get("--format") != "{{.Id}}" or len(refs) != 1:
            unsupported("podman", argv)
        print(store.must(refs[0])["id"])
    elif cmd == "ps":
        opts, rest = options(args, {"--filter", "--format"}, {"--all"}, "podman")
        if rest or "--all" not in opts:
            unsupported("podman", argv)
        ctrs = st["containers"]
        flt = opts.get("--filter", "")
        if flt:
            if not flt.startswith("label="):
                unsupported("podman", argv)
            key, eq, value = flt.removeprefix("label=").partition("=")
            ctrs = [c for c in ctrs if key in c["labels"] and (not eq or c["labels"][key] == value)]
        fmt = opts.get("--format")
        for c in ctrs:
            if fmt == "{{.Names}}":
                print(c["name"])
            elif fmt == '{{index .Labels "PODMAN_SYSTEMD_UNIT"}}':
                print(c["labels"].get("PODMAN_SYSTEMD_UNIT", ""))
            else:
                unsupported("podman", argv)
    elif cmd == "inspect":
        opts, names = options(args, {"--format"}, set(), "podman")
        if len(names) != 1:
            unsupported("podman", argv)
        ctr = next((c for c in st["containers"] if c["name"] == names[0]), None)
        if ctr is None:
            raise Fail(f'Error: no such object: "{names[0]}"')
        fmt = opts.get("--format")
        if fmt == "{{.ImageName}}":
            print(ctr["image_name"])
        elif fmt == "{{.Image}}":
            print(ctr["image"])
        elif fmt == '{{index .Config.Labels "io.containers.autoupdate"}}':
            print(ctr["labels"].get("io.containers.autoupdate", ""))
        elif fmt == PODMAN_HEALTH:
            print(f"{ctr['status']} {ctr['health'] or 'none'}")
        else:
            unsupported("podman", argv)
    elif cmd == "images":
        opts, rest = options(args, {"--format"}, {"--no-trunc"}, "podman")
        if rest or "--no-trunc" not in opts or opts.get("--format") != "{{.ID}} {{.ReadOnly}}":
            unsupported("podman", argv)
        for img in store.images:  # one line per name, like podman
            for _ in img["names"] or [None]:
                print(f"sha256:{img['id']} {str(bool(img.get('readonly'))).lower()}")
    elif cmd == "load":
        load(store, args, argv, "podman")
    elif cmd == "pull":
        opts, refs = options(args, set(), {"--quiet"}, "podman")
        if len(refs) != 1:
            unsupported("podman", argv)
        remote = st.get("registry", {}).get(refs[0])
        if remote is None:
            raise Fail(f"Error: initializing source docker://{refs[0]}: reading manifest: manifest unknown")
        img = store.add({**remote, "names": [refs[0]]})
        print(img["id"])
    elif cmd == "tag":
        if len(args) < 2:
            unsupported("podman", argv)
        img = store.must(args[0])
        for name in args[1:]:
            store.add_name(img, name)
    elif cmd == "untag":
        if len(args) < 2:
            unsupported("podman", argv)
        img = store.must(args[0])
        store.writable(img, "untagging")
        for name in args[1:]:
            if name not in img["names"]:
                raise Fail(f"Error: {name}: tag not known")
            img["names"].remove(name)
    elif cmd == "rmi":
        if len(args) != 1:
            unsupported("podman", argv)
        img = store.must(args[0])
        if any(c["image"] == img["id"] for c in st["containers"]):
            raise Fail(f"Error: image used by a container: {img['id']}", 2)
        store.writable(img, "removing")
        store.images.remove(img)
        print(f"Deleted: {img['id']}")
    else:
        unsupported("podman", argv)


def systemctl(state: dict, argv: list[str]) -> None:
    st = state["podman"]
    if len(argv) != 2 or argv[0] not in ("cat", "restart"):
        unsupported("systemctl", argv)
    verb, unit = argv
    if unit not in st["units"]:
        if verb == "cat":
            raise Fail(f"No files found for {unit}.", 1)
        raise Fail(f"Failed to restart {unit}: Unit {unit} not found.", 5)
    if verb == "cat":
        print(f"# /run/systemd/generator/{unit}\n[Unit]\nSourcePath=/etc/containers/systemd/{unit[:-8]}.container")
        return
    ctr = next((c for c in st["containers"] if c["labels"].get("PODMAN_SYSTEMD_UNIT") == unit), None)
    if ctr is None:
        unsupported("systemctl", argv)
    img = Store(st["images"], "").resolve(ctr["image_name"])
    if img is None:
        ctr.update(status="exited", health="")
        raise Fail(f"Job for {unit} failed because the control process exited with error code.", 1)
    ctr.update(image=img["id"], status="running", health=health_words(img.get("healthy")))
    if img.get("healthy") is False and st["units"][unit].get("notify_healthy", True):
        ctr.update(status="exited")  # HealthOnFailure=kill
        raise Fail(f"Job for {unit} failed because the control process exited with error code.", 1)


# ---------------------------------------------------------------- docker
def compose_services(project_dir: str) -> list[tuple[str, str]]:
    """(service, image) from a compose.yaml written the simple way the tests write it."""
    services: list[tuple[str, str]] = []
    service = None
    with open(os.path.join(project_dir, "compose.yaml")) as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith("  ") and line[2] != " " and line.endswith(":"):
            service = line.strip().removesuffix(":")
        elif line.startswith("    image:") and service:
            services.append((service, line.removeprefix("    image:").strip()))
    return services


def docker_compose(state: dict, store: Store, argv: list[str]) -> None:
    st = state["docker"]
    rest = list(argv)
    project_dir = project = None
    while rest[:1] in (["--project-directory"], ["--project-name"]):
        if rest[0] == "--project-directory":
            project_dir = rest[1]
        else:
            project = rest[1]
        rest = rest[2:]
    if not project_dir or not project or not rest:
        unsupported("docker compose", argv)
    services = compose_services(project_dir)
    sub, args = rest[0], rest[1:]
    if sub == "config" and args == ["--images"]:
        for image in dict.fromkeys(image for _, image in services):
            print(image)
    elif sub == "pull" and args == ["--quiet"]:
        for _, image in services:
            remote = st.get("registry", {}).get(image)
            if remote is None:
                raise Fail(f"Error response from daemon: manifest for {image} not found: manifest unknown", 1)
            store.add({**remote, "names": [image]})
    elif sub == "up":
        uopts, extra = options(args, {"--wait-timeout", "--pull"}, {"--detach", "--wait"}, "docker compose")
        if extra or uopts.get("--pull") != "never" or "--wait" not in uopts:
            unsupported("docker compose", argv)
        bad = []
        for service, image in services:
            img = store.resolve(image)
            if img is None:
                raise Fail(f"Error response from daemon: No such image: {image}", 1)
            cid = f"{project}-{service}-1"
            st["containers"] = [c for c in st["containers"] if c["id"] != cid]
            st["containers"].append(
                {
                    "id": cid,
                    "project": project,
                    "service": service,
                    "image": img["id"],
                    "status": "running",
                    "health": health_words(img.get("healthy")) or "none",
                }
            )
            if img.get("healthy") is False and not img.get("wait_ok"):
                bad.append(cid)
        if bad:
            raise Fail(f"container {bad[0]} is unhealthy", 1)
    elif sub == "ps" and args == ["--all", "--quiet"]:
        for c in st["containers"]:
            if c["project"] == project:
                print(c["id"])
    else:
        unsupported("docker compose", argv)


def docker(state: dict, argv: list[str]) -> None:
    st = state["docker"]
    store = Store(st["images"], "sha256:")
    if not argv:
        unsupported("docker", argv)
    cmd, args = argv[0], argv[1:]
    if cmd == "compose":
        docker_compose(state, store, args)
    elif cmd == "image" and args[:1] == ["inspect"]:
        opts, refs = options(args[1:], {"--format"}, set(), "docker")
        if opts.get("--format") != "{{.Id}}" or len(refs) != 1:
            unsupported("docker", argv)
        img = store.resolve(refs[0])
        if img is None:
            raise Fail(f"Error response from daemon: No such image: {refs[0]}", 1)
        print(img["id"])
    elif cmd == "inspect":
        opts, refs = options(args, {"--format"}, set(), "docker")
        if opts.get("--format") != DOCKER_HEALTH or len(refs) != 1:
            unsupported("docker", argv)
        ctr = next((c for c in st["containers"] if c["id"] == refs[0]), None)
        if ctr is None:
            raise Fail(f"Error response from daemon: No such object: {refs[0]}", 1)
        print(f"{ctr['status']} {ctr['health']}")
    elif cmd == "tag":
        if len(args) != 2:
            unsupported("docker", argv)
        src = store.resolve(args[0])
        if src is None:
            raise Fail(f"Error response from daemon: No such image: {args[0]}", 1)
        if not args[1][:1].isalnum() or args[1].strip("abcdefghijklmnopqrstuvwxyz0123456789._:/-"):
            raise Fail(f'Error parsing reference: "{args[1]}" is not a valid repository/tag', 1)
        store.add_name(src, args[1])
    elif cmd == "load":
        load(store, args, argv, "docker")
    else:
        unsupported("docker", argv)


# ---------------------------------------------------------------- main
def parent_cmdline() -> list[str]:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def main(prog: str) -> None:
    argv = sys.argv[1:]
    with open(os.environ["APP_UPDATE_CALLS"], "ab") as log:
        log.write(marshal.dumps({"prog": prog, "argv": argv, "parent": parent_cmdline()}))
    state_file = os.environ["APP_UPDATE_STATE"]
    with open(state_file, "rb") as f:
        state = marshal.load(f)
    code = 0
    try:
        {"podman": podman, "docker": docker, "systemctl": systemctl}[prog](state, argv)
    except Fail as e:
        print(e, file=sys.stderr)
        code = e.code
    # a failed command may have changed the state too (a unit that failed to start)
    with open(state_file + ".tmp", "wb") as f:
        marshal.dump(state, f)
    os.replace(state_file + ".tmp", state_file)
    sys.stdout.flush()
    sys.exit(code)
