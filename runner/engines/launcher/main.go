// xrun-exec: `xrun exec`'s passing path, compiled (issue 17: native-like overhead per test binary).
//
// `go test -exec "$(xrun exec --launcher --profile pi4)"` starts this program once per test binary.
// It does what a cached `xrun exec` does in Python (execwrap.run_in_cell with a plan on disk), without
// an interpreter's start-up: it reads the cached launch of the image, profile and kind of binary
// (engines/execplan.py), checks its stamps, builds the test binary's view of the host and its
// environment from the rules the plan carries (runner/execview.py), joins the cell's limits
// (engines/limits.py), starts the sandbox with stdio passed through and returns the exit status.
//
// Everything else is Python's: with no valid plan, or options it does not know, it execs
// `xrun exec` with the same arguments (which makes the plan); after a run that did not exit 0 it
// writes what it saw (status, output tails, what the limits saw) to a record and execs
// `xrun exec --explain-exit RECORD`, which classifies the exit like the matrix does.
//
// Stdlib only: xarch builds it with its own Go toolchain (engines/execlauncher.py).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const planFormat = "2" // execplan.FORMAT
const seccompMark = "{seccomp}"
const preexecMark = "\x01xarch-preexec" // argv[1] of the child stage (no NUL: argv cannot hold one)
const tailKeep = 64 << 10

// config is the sidecar file written beside the binary when xarch builds it.
type config struct {
	Xrun []string `json:"xrun"` // how to start xrun itself (execwrap.entry_point)
}

type viewRules struct {
	DenyExact  []string `json:"deny_exact"`
	DenyPrefix []string `json:"deny_prefix"`
	DenyWords  string   `json:"deny_words"`
	Home       string   `json:"home"`
	CopyLimit  int64    `json:"copy_limit"`
	DirFlags   []string `json:"dir_flags"`
	FileFlags  []string `json:"file_flags"`
}

type plan struct {
	Cell        string            `json:"cell"`
	Head        []string          `json:"head"`
	Seccomp     *string           `json:"seccomp"`
	ImageEnv    *env              `json:"image_env"`
	KidsEnv     *env              `json:"kids_env"`
	ArchEnv     *env              `json:"arch_env"`
	DefaultPath string            `json:"default_path"`
	App         string            `json:"app"`
	TmpSize     *int64            `json:"tmp_size"`
	Command     []string          `json:"command"`
	Limits      [3]int64          `json:"limits"`
	Key         string            `json:"key"`
	RawStamps   []json.RawMessage `json:"stamps"`
	View        *viewRules        `json:"view"`
}

type options struct {
	image, profile string
	timeout        float64
	hasTimeout     bool
	envItems       []string
	noEnv          bool
	binary         string
	args           []string
}

type bind struct {
	src, dst string
	rw       bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == preexecMark {
		preexec(os.Args[2:])
		return
	}
	// a closed stdout or stderr is an EPIPE to handle, not a SIGPIPE that kills this launcher before
	// it cleans up (a handled signal is back to its default in the children)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	os.Exit(run())
}

var fallbackArgs []string
var why = "explain the exit"

// slow says why a run goes to Python, and sends it there.
func slow(reason string) int {
	why = reason
	return toPython()
}

// toPython hands the whole run to `xrun exec` (never returns); XARCH_LAUNCHER_DEBUG=1 says why
// (=argv: prints the sandbox command line instead of running it).
func toPython(extra ...string) int {
	if os.Getenv("XARCH_LAUNCHER_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "xrun-exec: to xrun exec: %s\n", why)
	}
	cfg, err := readConfig()
	if err != nil || len(cfg.Xrun) == 0 {
		fmt.Fprintf(os.Stderr, "xrun exec: the launcher's config beside %s is unreadable (%v): run `xrun exec --launcher` again\n", os.Args[0], err)
		return 3
	}
	argv := append(append(append([]string{}, cfg.Xrun...), "exec"), extra...)
	argv = append(argv, fallbackArgs...)
	err = execvp(argv)
	fmt.Fprintf(os.Stderr, "xrun exec: cannot start %s: %v\n", argv[0], err)
	return 3
}

// execvp replaces this process with argv, its program looked up on PATH when it has no "/".
func execvp(argv []string) error {
	exe := argv[0]
	if !strings.Contains(exe, "/") {
		if p, err := exec.LookPath(exe); err == nil {
			exe = p
		}
	}
	return syscall.Exec(exe, argv, os.Environ())
}

func readConfig() (config, error) {
	var cfg config
	self, err := os.Executable()
	if err != nil {
		return cfg, err
	}
	data, err := os.ReadFile(self + ".json")
	if err != nil {
		return cfg, err
	}
	return cfg, json.Unmarshal(data, &cfg)
}

// parse reads xrun exec's own options (commands/exec.py); ok=false for anything else.
func parse(argv []string) (options, bool) {
	o := options{image: "scratch", profile: "baseline"}
	i := 0
	value := func(name string) (string, bool) {
		a := argv[i]
		if strings.HasPrefix(a, name+"=") {
			return a[len(name)+1:], true
		}
		if i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") { // argparse refuses a value like an option
			i++
			return argv[i], true
		}
		return "", false
	}
	for ; i < len(argv); i++ {
		a := argv[i]
		name := a
		if eq := strings.IndexByte(a, '='); eq > 0 && strings.HasPrefix(a, "--") {
			name = a[:eq]
		}
		switch {
		case a == "--":
			return o, false // argparse's own rules for it: Python's
		case name == "--image" || name == "--profile" || name == "--timeout" || name == "--env":
			v, ok := value(name)
			if !ok {
				return o, false
			}
			switch name {
			case "--image":
				o.image = v
			case "--profile":
				o.profile = v
			case "--env":
				o.envItems = append(o.envItems, v)
			case "--timeout":
				t, err := strconv.ParseFloat(v, 64)
				if !plainNumber.MatchString(v) || err != nil || t <= 0 || t > 1e9 {
					return o, false // Python says what is wrong with it (or what 0, inf or 1e300 mean)
				}
				o.timeout, o.hasTimeout = t, true
			}
		case a == "--no-env":
			o.noEnv = true
		case strings.HasPrefix(a, "-"):
			return o, false // --help, --install-wrappers, --launcher, a typo: Python's
		default:
			goto binary
		}
	}
binary:
	if i >= len(argv) {
		return o, false
	}
	o.binary, o.args = argv[i], argv[i+1:]
	return o, true
}

var plainNumber = regexp.MustCompile(`^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$`)

// physicalCwd is os.getcwd(): the kernel's, not $PWD (go test sets PWD to a path that may pass
// through a symlink).
func physicalCwd() (string, error) { return syscall.Getwd() }

func run() int {
	fallbackArgs = os.Args[1:]
	o, ok := parse(os.Args[1:])
	if !ok {
		return slow("options it does not handle")
	}
	cwd, err := physicalCwd()
	if err != nil {
		return slow("no working directory")
	}
	abs := o.binary // Path.resolve(): symlinks resolved before "..", not cleaned first
	if !strings.HasPrefix(abs, "/") {
		abs = cwd + "/" + abs
	}
	binaryPath, err := filepath.EvalSymlinks(abs) // absolute in, absolute and clean out
	if err != nil {
		return slow("binary path")
	}
	cache, err := cacheDir(cwd)
	if err != nil {
		return slow("no cache dir")
	}
	kind, ok := headerKind(binaryPath)
	if !ok {
		return slow("not an ELF it reads")
	}
	p, bad := loadPlan(cache, o.image, o.profile, kind)
	if p == nil {
		return slow(bad)
	}
	env := cellEnv(os.Environ(), o.envItems, o.noEnv, p.View)
	tmp := tempDir(cwd)
	removeStaleTmpdirs(tmp)
	scratch, err := os.MkdirTemp(tmp, fmt.Sprintf("xarch-exec-%d-", os.Getpid()))
	if err != nil {
		return slow("could not make a scratch dir")
	}
	binds, err := viewFor(cwd, o.args, env, scratch, p.View)
	if err != nil {
		os.RemoveAll(scratch)
		return slow("could not build the view")
	}
	rc, rec, instead := launch(p, binaryPath, o, cwd, binds, env)
	if instead != "" {
		os.RemoveAll(scratch)
		return slow(instead)
	}
	if rec == nil {
		os.RemoveAll(scratch)
		if reraise != 0 {
			signal.Reset(reraise)
			syscall.Kill(os.Getpid(), reraise)
			time.Sleep(time.Second)
		}
		return rc
	}
	// the exit needs explaining: Python's classifier, with this run's facts (it removes the scratch dir)
	rec["binary"], rec["args"], rec["image"], rec["profile"] = binaryPath, o.args, o.image, o.profile
	rec["cwd"], rec["env"], rec["scratch"] = cwd, env, scratch
	if o.hasTimeout {
		rec["timeout"] = o.timeout
	}
	bl := [][]any{}
	for _, b := range binds {
		bl = append(bl, []any{b.src, b.dst, b.rw})
	}
	rec["binds"] = bl
	data, _ := json.Marshal(rec)
	recPath := filepath.Join(scratch, "exit.json")
	if err := os.WriteFile(recPath, data, 0o600); err != nil {
		os.RemoveAll(scratch)
		return rc
	}
	fallbackArgs = nil
	toPython("--explain-exit", recPath) // returns only when xrun could not be started: the status stands
	os.RemoveAll(scratch)
	return rc
}

// ---- where things are (paths.py) ----

// cacheDir is paths.cache_dir, as pathlib spells it (".." kept: the plan's key is that string).
func cacheDir(cwd string) (string, error) {
	if v := os.Getenv("XARCH_CACHE_DIR"); v != "" {
		if strings.HasPrefix(v, "~") {
			return "", errors.New("~ in XARCH_CACHE_DIR") // Python expands it
		}
		return pjoin(cwd, v), nil // an absolute v stays itself
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" && strings.HasPrefix(x, "/") {
		return pjoin(x, "xarch"), nil
	}
	home := os.Getenv("HOME")
	if home == "" || !strings.HasPrefix(home, "/") {
		return "", errors.New("no absolute HOME") // Python asks the password database
	}
	return pjoin(home, ".cache/xarch"), nil
}

// tempDir is tempfile.gettempdir: the first of $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp that
// is a writable directory, made absolute and normalised (os.path.abspath).
func tempDir(cwd string) string {
	cands := []string{}
	for _, k := range []string{"TMPDIR", "TEMP", "TMP"} {
		if v := os.Getenv(k); v != "" {
			cands = append(cands, v)
		}
	}
	for _, d := range append(cands, "/tmp", "/var/tmp", "/usr/tmp") {
		if !strings.HasPrefix(d, "/") {
			d = cwd + "/" + d
		}
		if writableDir(d) {
			return filepath.Clean(d)
		}
	}
	return "/tmp"
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// removeStaleTmpdirs is paths.remove_stale_tmpdirs: scratch dirs of runs whose process is gone.
func removeStaleTmpdirs(tmp string) {
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range ents {
		parts := strings.Split(e.Name(), "-")
		if len(parts) != 4 || parts[0] != "xarch" || !e.IsDir() || e.Type()&fs.ModeSymlink != 0 {
			continue
		}
		pid, err := strconv.Atoi(parts[2])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		d := filepath.Join(tmp, e.Name())
		filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		os.RemoveAll(d)
	}
}
