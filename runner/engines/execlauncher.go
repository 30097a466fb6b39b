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
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"
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
	exe := argv[0]
	if !strings.Contains(exe, "/") {
		if p, err := exec.LookPath(exe); err == nil {
			exe = p
		}
	}
	err = syscall.Exec(exe, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "xrun exec: cannot start %s: %v\n", exe, err)
	return 3
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
		if i+1 < len(argv) {
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
			i++
			goto binary
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
				if err != nil || t <= 0 {
					return o, false // Python says what is wrong with it
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

func run() int {
	fallbackArgs = os.Args[1:]
	o, ok := parse(os.Args[1:])
	if !ok {
		return slow("options it does not handle")
	}
	abs, err := filepath.Abs(o.binary)
	if err != nil {
		return slow("binary path")
	}
	binaryPath, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return slow("binary path")
	}
	cache, err := cacheDir()
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
	cwd, err := os.Getwd()
	if err != nil {
		return slow("no working directory")
	}
	env := cellEnv(os.Environ(), o.envItems, o.noEnv, p.View)
	removeStaleTmpdirs()
	scratch, err := os.MkdirTemp(tempDir(), fmt.Sprintf("xarch-exec-%d-", os.Getpid()))
	if err != nil {
		return slow("could not make a scratch dir")
	}
	binds, err := viewFor(cwd, o.args, env, scratch, p.View)
	if err != nil {
		os.RemoveAll(scratch)
		return slow("could not build the view")
	}
	rc, rec := launch(p, binaryPath, o, cwd, binds, env)
	if rec == nil {
		os.RemoveAll(scratch)
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
	return toPython("--explain-exit", recPath)
}

// ---- where things are (paths.py) ----

func cacheDir() (string, error) {
	if v := os.Getenv("XARCH_CACHE_DIR"); v != "" {
		if strings.HasPrefix(v, "~") {
			return "", errors.New("~ in XARCH_CACHE_DIR") // Python expands it
		}
		return filepath.Abs(v)
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "xarch"), nil
	}
	home := os.Getenv("HOME")
	if home == "" {
		return "", errors.New("no HOME")
	}
	return filepath.Join(home, ".cache", "xarch"), nil
}

func tempDir() string {
	for _, k := range []string{"TMPDIR", "TEMP", "TMP"} { // tempfile.gettempdir's order
		if v := os.Getenv(k); v != "" {
			if st, err := os.Stat(v); err == nil && st.IsDir() {
				return v
			}
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
func removeStaleTmpdirs() {
	ents, err := os.ReadDir(tempDir())
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
		d := filepath.Join(tempDir(), e.Name())
		filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		os.RemoveAll(d)
	}
}

// ---- the plan (execplan.py) ----

// headerKind is execplan.header_kind: e_ident, machine, flags and PT_INTERP of an ELF.
func headerKind(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	head := make([]byte, 64)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if n < 52 || !bytes.Equal(head[:4], []byte("\x7fELF")) || (head[4] != 1 && head[4] != 2) || (head[5] != 1 && head[5] != 2) {
		return "", false
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if head[5] == 2 {
		bo = binary.BigEndian
	}
	var machine, phentsize, phnum uint16
	var phoff uint64
	var flags uint32
	machine = bo.Uint16(head[18:])
	if head[4] == 1 {
		phoff = uint64(bo.Uint32(head[28:]))
		flags = bo.Uint32(head[36:])
		phentsize, phnum = bo.Uint16(head[42:]), bo.Uint16(head[44:])
	} else {
		if n < 58 {
			return "", false
		}
		phoff = bo.Uint64(head[32:])
		flags = bo.Uint32(head[48:])
		phentsize, phnum = bo.Uint16(head[54:]), bo.Uint16(head[56:])
	}
	interp := ""
	if phnum > 0 && phentsize > 0 && phnum < 256 {
		table := make([]byte, int(phentsize)*int(phnum))
		m, _ := f.ReadAt(table, int64(phoff))
		table = table[:m]
		for i := 0; i+int(phentsize) <= len(table); i += int(phentsize) {
			ent := table[i : i+int(phentsize)]
			if len(ent) < 4 || bo.Uint32(ent) != 3 {
				continue
			}
			var off, size uint64
			if head[4] == 1 {
				if len(ent) < 20 {
					break
				}
				off, size = uint64(bo.Uint32(ent[4:])), uint64(bo.Uint32(ent[16:]))
			} else {
				if len(ent) < 40 {
					break
				}
				off, size = bo.Uint64(ent[8:]), bo.Uint64(ent[32:])
			}
			if size > 4096 {
				size = 4096
			}
			buf := make([]byte, size)
			k, _ := f.ReadAt(buf, int64(off))
			buf = buf[:k]
			if z := bytes.IndexByte(buf, 0); z >= 0 {
				buf = buf[:z]
			}
			if !utf8.Valid(buf) {
				return "", false // Python decodes it with replacement: its key, not ours
			}
			interp = string(buf)
			break
		}
	}
	return fmt.Sprintf("%s:%d:%x:%s", hex.EncodeToString(head[:16]), machine, flags, interp), true
}

// planKey is execplan.plan_key: the plan's file and its whole key.
func planKey(cache, image, profile, kind string) (string, string) {
	key := strings.Join([]string{planFormat, image, profile, kind, strconv.Itoa(os.Getuid()),
		strconv.Itoa(os.Getgid()), bootID(), cache}, "\x00")
	raw := []byte(key)
	rev := make([]byte, len(raw))
	for i, c := range raw {
		rev[len(raw)-1-i] = c
	}
	name := fmt.Sprintf("%08x%08x.json", crc32.ChecksumIEEE(raw), crc32.ChecksumIEEE(rev))
	return filepath.Join(cache, "exec", name), key
}

// statKey is paths.stat_key, as the JSON numbers Python wrote.
func statKey(path string) []string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return []string{"null"}
	}
	return []string{strconv.FormatUint(st.Ino, 10), strconv.FormatInt(st.Size, 10),
		strconv.FormatInt(st.Mtim.Nano(), 10), strconv.FormatInt(st.Ctim.Nano(), 10),
		strconv.FormatUint(uint64(st.Mode), 10), strconv.FormatUint(uint64(st.Uid), 10)}
}

// loadPlan is execplan.load: the plan, if it is there, is this key's and every file it names is as
// it was; else why not.
func loadPlan(cache, image, profile, kind string) (*plan, string) {
	path, key := planKey(cache, image, profile, kind)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "no plan yet for this image, profile and kind of binary"
	}
	var p plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, "plan unreadable: " + err.Error()
	}
	if p.Key != key {
		return nil, "plan of another key"
	}
	if p.Head == nil || p.View == nil || p.ImageEnv == nil || p.KidsEnv == nil || p.ArchEnv == nil {
		return nil, "plan without a launch"
	}
	for _, raw := range p.RawStamps {
		var s []json.RawMessage
		if json.Unmarshal(raw, &s) != nil || len(s) < 2 {
			return nil, "plan with a bad stamp"
		}
		var name string
		if json.Unmarshal(s[0], &name) != nil {
			return nil, "plan with a bad stamp"
		}
		now := statKey(name)
		if len(now) != len(s)-1 {
			return nil, name + " changed"
		}
		for i, v := range now {
			if strings.TrimSpace(string(s[i+1])) != v {
				return nil, name + " changed"
			}
		}
	}
	return &p, ""
}

// ---- the environment and the view (execview.py) ----

func denied(name string, r *viewRules, words *regexp.Regexp) bool {
	for _, e := range r.DenyExact {
		if name == e {
			return true
		}
	}
	for _, pre := range r.DenyPrefix {
		if strings.HasPrefix(name, pre) {
			return true
		}
	}
	return words.MatchString(strings.ToUpper(name))
}

// env is an ordered map: Python's dicts keep insertion order, and the command line follows it.
type env struct {
	keys []string
	vals map[string]string
}

func newEnv() *env { return &env{vals: map[string]string{}} }

func (e *env) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

func (e *env) get(k string) (string, bool) { v, ok := e.vals[k]; return v, ok }

func (e *env) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range e.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kk, _ := json.Marshal(k)
		vv, _ := json.Marshal(e.vals[k])
		b.Write(kk)
		b.WriteByte(':')
		b.Write(vv)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON keeps the object's order (the plan's environments are Python dicts).
func (e *env) UnmarshalJSON(data []byte) error {
	e.keys, e.vals = nil, map[string]string{}
	d := json.NewDecoder(bytes.NewReader(data))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return errors.New("not an object")
	}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return err
		}
		var v string
		if err := d.Decode(&v); err != nil {
			return err
		}
		e.set(t.(string), v)
	}
	return nil
}

func cellEnv(environ []string, explicit []string, noEnv bool, r *viewRules) *env {
	words := regexp.MustCompile(r.DenyWords)
	host := map[string]string{}
	out := newEnv()
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := host[k]; dup {
			continue
		}
		host[k] = v
		keep := !denied(k, r, words)
		if noEnv {
			keep = ((strings.HasPrefix(k, "GO") || strings.HasPrefix(k, "TEST")) && !denied(k, r, words)) || k == "TERM"
		}
		if keep {
			out.set(k, v)
		}
	}
	for _, item := range explicit {
		name, value, eq := strings.Cut(item, "=")
		if eq {
			out.set(name, value)
		} else if v, ok := host[name]; ok {
			out.set(name, v)
		}
	}
	out.set("HOME", r.Home)
	return out
}

func moduleRoot(start string) string {
	for d := start; ; d = filepath.Dir(d) {
		for _, n := range []string{"go.mod", "go.work"} {
			if st, err := os.Stat(filepath.Join(d, n)); err == nil && st.Mode().IsRegular() {
				return d
			}
		}
		if d == "/" {
			return ""
		}
	}
}

func within(p, d string) bool {
	return p == d || d == "/" || strings.HasPrefix(p, d+"/")
}

var testFlag = regexp.MustCompile(`^--?test\.(\w+)(?:=(.*))?$`)

type wpath struct {
	path   string
	isFile bool
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// pjoin is pathlib's `Path(base) / rel`: joined and normalised as pathlib does (no "", "." parts), ".." kept.
func pjoin(base, rel string) string {
	if strings.HasPrefix(rel, "/") {
		return pnorm(rel)
	}
	return pnorm(base + "/" + rel)
}

func pnorm(p string) string {
	var parts []string
	for _, x := range strings.Split(p, "/") {
		if x != "" && x != "." {
			parts = append(parts, x)
		}
	}
	if strings.HasPrefix(p, "/") {
		return "/" + strings.Join(parts, "/")
	}
	if len(parts) == 0 {
		return "."
	}
	return strings.Join(parts, "/")
}

func pparent(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func writablePaths(args []string, e *env, cwd, module string, r *viewRules) []wpath {
	inside := module
	if inside == "" {
		inside = cwd
	}
	flags := map[string]string{}
	var order []string
	for i, a := range args {
		m := testFlag.FindStringSubmatch(a)
		if m == nil || !(contains(r.DirFlags, m[1]) || contains(r.FileFlags, m[1])) {
			continue
		}
		v := m[2]
		if !strings.Contains(a, "=") {
			v = ""
			if i+1 < len(args) {
				v = args[i+1]
			}
		}
		if v != "" {
			if _, seen := flags[m[1]]; !seen {
				order = append(order, m[1])
			}
			flags[m[1]] = v
		}
	}
	outdir := cwd
	if v, ok := flags["outputdir"]; ok {
		outdir = (pjoin(cwd, v))
	}
	var out []wpath
	seen := map[wpath]bool{}
	add := func(w wpath) {
		if !seen[w] && w.path != "/" {
			seen[w] = true
			out = append(out, w)
		}
	}
	for _, name := range order {
		v := flags[name]
		if contains(r.DirFlags, name) {
			d := (pjoin(cwd, v))
			if !within(d, inside) && !within(cwd, d) {
				add(wpath{d, false})
			}
			continue
		}
		f := (pjoin(outdir, v))
		if within(f, inside) || within(cwd, pparent(f)) {
			add(wpath{f, true})
		} else {
			add(wpath{pparent(f), false})
		}
	}
	if g, ok := e.get("GOCOVERDIR"); ok && g != "" && !within((pjoin(cwd, g)), inside) {
		add(wpath{pnorm(g), false})
	}
	return out
}

func dirSize(d string, limit int64) int64 {
	var total int64
	stop := errors.New("over")
	filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		if info, err := os.Lstat(p); err == nil {
			total += info.Size()
		}
		if total > limit {
			return stop
		}
		return nil
	})
	return total
}

func copyFile(src, dst string, info fs.FileInfo) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	os.Chmod(dst, info.Mode().Perm())
	return os.Chtimes(dst, info.ModTime(), info.ModTime())
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, to)
		case info.IsDir():
			return os.MkdirAll(to, info.Mode().Perm()|0o700)
		case info.Mode().IsRegular():
			return copyFile(p, to, info)
		}
		return nil
	})
}

// viewFor is execview.view_for: the binds of a binary run from cwd with these args and environment.
func viewFor(cwd string, args []string, e *env, scratch string, r *viewRules) ([]bind, error) {
	var binds []bind
	module := moduleRoot(cwd)
	if module != "" && module != "/" {
		binds = append(binds, bind{module, module, false})
	}
	ents, err := os.ReadDir(cwd) // sorted by name, as Python sorts them
	if err != nil {
		return nil, err
	}
	var size int64
	for _, en := range ents {
		if en.IsDir() && en.Name() == "testdata" {
			size += dirSize(filepath.Join(cwd, en.Name()), r.CopyLimit)
		} else if !en.IsDir() {
			if info, err := os.Lstat(filepath.Join(cwd, en.Name())); err == nil {
				size += info.Size()
			}
		}
	}
	pkg := filepath.Join(scratch, "pkg")
	copied := size <= r.CopyLimit
	if !copied {
		binds = append(binds, bind{cwd, cwd, false})
	} else {
		if err := os.Mkdir(pkg, 0o777); err != nil {
			return nil, err
		}
		for _, en := range ents {
			src, dst := filepath.Join(cwd, en.Name()), filepath.Join(pkg, en.Name())
			info, err := os.Lstat(src)
			if err != nil {
				return nil, err
			}
			switch {
			case info.Mode()&fs.ModeSymlink != 0:
				l, err := os.Readlink(src)
				if err != nil {
					return nil, err
				}
				if err := os.Symlink(l, dst); err != nil {
					return nil, err
				}
			case info.Mode().IsRegular():
				if err := copyFile(src, dst, info); err != nil {
					return nil, err
				}
			}
		}
		for _, en := range ents {
			if en.IsDir() && en.Name() == "testdata" {
				if err := copyTree(filepath.Join(cwd, en.Name()), filepath.Join(pkg, en.Name())); err != nil {
					return nil, err
				}
			}
		}
		binds = append(binds, bind{pkg, cwd, true})
		for _, en := range ents {
			if en.IsDir() && en.Name() != "testdata" {
				os.Mkdir(filepath.Join(pkg, en.Name()), 0o777)
				binds = append(binds, bind{filepath.Join(cwd, en.Name()), pjoin(cwd, en.Name()), false})
			}
		}
	}
	for _, w := range writablePaths(args, e, cwd, module, r) {
		if w.isFile {
			if st, err := os.Stat(pparent(w.path)); err != nil || !st.IsDir() {
				continue
			}
			f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY, 0o666)
			if err != nil {
				return nil, err
			}
			f.Close()
			if copied && within(w.path, cwd) {
				rel := strings.TrimPrefix(strings.TrimPrefix(w.path, cwd), "/")
				mp := filepath.Join(pkg, rel)
				os.MkdirAll(filepath.Dir(mp), 0o777)
				if g, err := os.OpenFile(mp, os.O_CREATE|os.O_WRONLY, 0o666); err == nil {
					g.Close()
				}
			}
		} else if err := os.MkdirAll(w.path, 0o777); err != nil {
			return nil, err
		}
		binds = append(binds, bind{w.path, w.path, true})
	}
	home := filepath.Join(scratch, "home")
	if err := os.Mkdir(home, 0o777); err != nil {
		return nil, err
	}
	return append(binds, bind{home, r.Home, true}), nil
}

// argvOf is execplan.argv_of: the sandbox command line of this run.
func argvOf(p *plan, artifact string, args []string, cwd string, binds []bind, runEnv *env, seccompFD string) []string {
	// execplan.launch_env: the image's Env, the caller's over it, the arch's appended, PATH and HOME
	e := newEnv()
	for _, k := range p.ImageEnv.keys {
		e.set(k, p.ImageEnv.vals[k])
	}
	for _, k := range runEnv.keys {
		e.set(k, runEnv.vals[k])
	}
	for _, k := range p.ArchEnv.keys {
		val := p.ArchEnv.vals[k]
		if old, ok := e.get(k); ok && old != "" {
			e.set(k, old+","+val)
		} else {
			e.set(k, val)
		}
	}
	if _, ok := e.get("PATH"); !ok {
		e.set("PATH", p.DefaultPath)
	}
	if _, ok := e.get("HOME"); !ok {
		e.set("HOME", "/")
	}
	kids := newEnv() // {**kids_env, **env}
	for _, k := range p.KidsEnv.keys {
		kids.set(k, p.KidsEnv.vals[k])
	}
	for _, k := range e.keys {
		kids.set(k, e.vals[k])
	}
	var argv []string
	for _, a := range p.Head {
		if a == seccompMark {
			a = seccompFD
		}
		argv = append(argv, a)
	}
	argv = append(argv, "--ro-bind", artifact, p.App)
	if p.TmpSize != nil {
		argv = append(argv, "--perms", "1777", "--size", strconv.FormatInt(*p.TmpSize, 10), "--tmpfs", "/tmp")
	}
	for _, b := range binds {
		flag := "--ro-bind"
		if b.rw {
			flag = "--bind"
		}
		argv = append(argv, flag, b.src, b.dst)
	}
	argv = append(argv, "--remount-ro", "/", "--chdir", cwd, "--clearenv")
	for _, k := range kids.keys {
		argv = append(argv, "--setenv", k, kids.vals[k])
	}
	argv = append(argv, "--")
	argv = append(argv, p.Command...)
	return append(argv, args...)
}

// ---- the limits (limits.py) ----

type controller struct {
	version int
	base    string
}

type mount struct {
	point, root, fstype string
	opts                map[string]bool
}

func cgroupMounts() []mount {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []mount
	for _, line := range strings.Split(string(data), "\n") {
		left, right, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, r := strings.Fields(left), strings.Fields(right)
		if len(f) < 5 || len(r) < 3 || (r[0] != "cgroup" && r[0] != "cgroup2") {
			continue
		}
		opts := map[string]bool{}
		for _, o := range strings.Split(r[2], ",") {
			opts[o] = true
		}
		out = append(out, mount{f[4], f[3], r[0], opts})
	}
	return out
}

func memberships() map[string]string {
	data, _ := os.ReadFile("/proc/self/cgroup")
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrls := []string{""}
		if parts[1] != "" {
			ctrls = strings.Split(parts[1], ",")
		}
		for _, c := range ctrls {
			out[c] = parts[2]
		}
	}
	return out
}

func cgJoin(mnt, root, path string) string {
	rel := strings.TrimLeft(path, "/")
	if strings.HasPrefix(path, root) {
		if r, err := filepath.Rel(root, path); err == nil {
			rel = r
		}
	}
	if rel == "." {
		return mnt
	}
	return filepath.Join(mnt, rel)
}

func writableDir(d string) bool {
	st, err := os.Stat(d)
	return err == nil && st.IsDir() && syscall.Access(d, 0x2|0x1) == nil
}

func detect(tag string) map[string]controller {
	mounts, member := cgroupMounts(), memberships()
	found := map[string]controller{}
	if own, ok := member[""]; ok {
		for _, m := range mounts {
			if m.fstype != "cgroup2" {
				continue
			}
			o := cgJoin(m.point, m.root, own)
			for _, parent := range []string{filepath.Dir(o), o} {
				sc, _ := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
				en := strings.Fields(string(sc))
				if contains(en, "memory") && contains(en, "pids") && writableDir(parent) && within(parent, m.point) {
					base := filepath.Join(parent, "xarch-"+tag)
					return map[string]controller{"memory": {2, base}, "pids": {2, base}}
				}
			}
		}
	}
	for _, ctrl := range []string{"memory", "pids"} {
		for _, m := range mounts {
			if m.fstype == "cgroup" && m.opts[ctrl] {
				if own, ok := member[ctrl]; ok {
					if o := cgJoin(m.point, m.root, own); writableDir(o) {
						found[ctrl] = controller{1, filepath.Join(o, "xarch-"+tag)}
					}
				}
				break
			}
		}
	}
	return found
}

func pidsIn(d string) []int {
	data, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func emptyAndRmdir(d string) {
	kill := filepath.Join(d, "cgroup.kill")
	for i := 0; i < 50; i++ {
		pids := pidsIn(d)
		if len(pids) == 0 {
			break
		}
		if _, err := os.Stat(kill); err == nil {
			os.WriteFile(kill, []byte("1"), 0)
		} else {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Rmdir(d)
}

func removeCgroup(d string) {
	var dirs []string
	filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.IsDir() && p != d {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	for _, s := range dirs {
		emptyAndRmdir(s)
	}
	emptyAndRmdir(d)
}

type cellLimits struct {
	ctrls map[string]controller
	dirs  map[string]string // controller -> the cell's cgroup
	data  int64             // RLIMIT_DATA when no memory cgroup (0: none)
	nproc int64             // RLIMIT_NPROC when no pids cgroup and not root (0: none)
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0) }

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func newLimits(memory, pids int64) *cellLimits {
	cl := &cellLimits{ctrls: map[string]controller{}, dirs: map[string]string{}}
	if os.Getenv("XARCH_LIMITS") != "rlimit" {
		parents := map[string]bool{}
		for ctrl, c := range detect(strconv.Itoa(os.Getpid())) {
			if err := os.Mkdir(c.base, 0o755); err != nil && !os.IsExist(err) {
				continue
			}
			if c.version == 2 && writeFile(filepath.Join(c.base, "cgroup.subtree_control"), "+memory +pids") != nil {
				continue
			}
			cl.ctrls[ctrl] = c
			parents[filepath.Dir(c.base)] = true
		}
		for parent := range parents { // cgroups of xrun processes that died without removing theirs
			ents, _ := os.ReadDir(parent)
			for _, e := range ents {
				tag, ok := strings.CutPrefix(e.Name(), "xarch-")
				pid, err := strconv.Atoi(tag)
				if !ok || err != nil || pid == os.Getpid() || exists(fmt.Sprintf("/proc/%d", pid)) {
					continue
				}
				removeCgroup(filepath.Join(parent, e.Name()))
			}
		}
	}
	for ctrl, c := range cl.ctrls {
		d := filepath.Join(c.base, "cell-1")
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			continue
		}
		var err error
		switch {
		case ctrl == "memory" && c.version == 2:
			err = writeFile(filepath.Join(d, "memory.max"), strconv.FormatInt(memory, 10))
			if err == nil && exists(filepath.Join(d, "memory.swap.max")) {
				err = writeFile(filepath.Join(d, "memory.swap.max"), "0")
			}
		case ctrl == "memory":
			err = writeFile(filepath.Join(d, "memory.limit_in_bytes"), strconv.FormatInt(memory, 10))
			if err == nil && exists(filepath.Join(d, "memory.memsw.limit_in_bytes")) {
				err = writeFile(filepath.Join(d, "memory.memsw.limit_in_bytes"), strconv.FormatInt(memory, 10))
			}
		default:
			err = writeFile(filepath.Join(d, "pids.max"), strconv.FormatInt(pids, 10))
		}
		if err == nil {
			cl.dirs[ctrl] = d
		}
	}
	if _, ok := cl.dirs["memory"]; !ok {
		cl.data = memory
	}
	if _, ok := cl.dirs["pids"]; !ok && os.Getuid() != 0 {
		n := int64(0)
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			var st syscall.Stat_t
			if syscall.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == os.Getuid() {
				n++
			}
		}
		cl.nproc = n + pids
	}
	return cl
}

// preexecArgs is what the child runs first: this program again, which joins the limits and execs.
func (cl *cellLimits) preexecArgs() []string {
	seen := map[string]bool{}
	var procs []string
	for _, ctrl := range []string{"memory", "pids"} {
		if d, ok := cl.dirs[ctrl]; ok && !seen[d] {
			seen[d] = true
			procs = append(procs, filepath.Join(d, "cgroup.procs"))
		}
	}
	return []string{preexecMark, strings.Join(procs, "\x01"), strconv.FormatInt(cl.data, 10), strconv.FormatInt(cl.nproc, 10), "--"}
}

func field(text, key string) int64 {
	for _, line := range strings.Split(text, "\n") {
		k, v, _ := strings.Cut(line, " ")
		if k == key {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return n
			}
		}
	}
	return 0
}

func readStr(p string) string { b, _ := os.ReadFile(p); return string(b) }

// outcome is what limits.CellLimits.outcome reads, as raw facts (Python words them).
func (cl *cellLimits) outcome() map[string]any {
	out := map[string]any{"cgroups": map[string]int{}, "nproc": cl.nproc != 0, "oom_kills": 0, "pids_refusals": 0, "memory_peak": nil}
	cg := out["cgroups"].(map[string]int)
	for ctrl := range cl.dirs {
		cg[ctrl] = cl.ctrls[ctrl].version
	}
	if d, ok := cl.dirs["memory"]; ok {
		v := cl.ctrls["memory"].version
		if v == 2 {
			out["oom_kills"] = field(readStr(filepath.Join(d, "memory.events")), "oom_kill")
			if n, err := strconv.ParseInt(strings.TrimSpace(readStr(filepath.Join(d, "memory.peak"))), 10, 64); err == nil {
				out["memory_peak"] = n
			}
		} else {
			out["oom_kills"] = field(readStr(filepath.Join(d, "memory.oom_control")), "oom_kill")
			if n, err := strconv.ParseInt(strings.TrimSpace(readStr(filepath.Join(d, "memory.max_usage_in_bytes"))), 10, 64); err == nil {
				out["memory_peak"] = n
			}
		}
	}
	if d, ok := cl.dirs["pids"]; ok {
		out["pids_refusals"] = field(readStr(filepath.Join(d, "pids.events")), "max")
	}
	return out
}

func (cl *cellLimits) close() {
	seen := map[string]bool{}
	for _, d := range cl.dirs {
		if !seen[d] {
			seen[d] = true
			emptyAndRmdir(d)
		}
	}
	seen = map[string]bool{}
	for _, c := range cl.ctrls {
		if !seen[c.base] {
			seen[c.base] = true
			removeCgroup(c.base)
		}
	}
}

// preexec runs in the child, before the sandbox: join the cgroups, or set the rlimits, then exec.
func preexec(a []string) {
	if len(a) < 5 || a[3] != "--" {
		os.Exit(3)
	}
	if a[0] != "" {
		for _, p := range strings.Split(a[0], "\x01") {
			if err := writeFile(p, "0"); err != nil {
				fmt.Fprintf(os.Stderr, "xrun exec: cannot join the cell's cgroup %s: %v\n", p, err)
				os.Exit(125)
			}
		}
	}
	if n, _ := strconv.ParseUint(a[1], 10, 64); n > 0 {
		syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: n, Max: n})
	}
	if n, _ := strconv.ParseUint(a[2], 10, 64); n > 0 {
		syscall.Setrlimit(6 /* RLIMIT_NPROC */, &syscall.Rlimit{Cur: n, Max: n})
	}
	argv := a[4:]
	exe := argv[0]
	if !strings.Contains(exe, "/") {
		if p, err := exec.LookPath(exe); err == nil {
			exe = p
		}
	}
	err := syscall.Exec(exe, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "xrun exec: cannot start %s: %v\n", argv[0], err)
	os.Exit(127)
}

// ---- the run (execplan.launch, proc.run_attached) ----

type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailKeep {
		t.buf = append([]byte{}, t.buf[len(t.buf)-tailKeep:]...)
	}
	t.mu.Unlock()
	return len(p), nil
}

func isTerminal(f *os.File) bool { // Python's isatty: the TCGETS ioctl
	var t syscall.Termios
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return e == 0
}

// launch runs the binary through the plan; the status, and the record of an exit to explain (nil for none).
func launch(p *plan, artifact string, o options, cwd string, binds []bind, e *env) (int, map[string]any) {
	var core syscall.Rlimit // children inherit RLIMIT_CORE=0 (proc.disable_core_dumps)
	if syscall.Getrlimit(syscall.RLIMIT_CORE, &core) == nil {
		syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: core.Max})
	}
	var extra []*os.File
	if p.Seccomp != nil {
		prog, err := hex.DecodeString(*p.Seccomp)
		if err != nil {
			return toPython(), nil
		}
		r, w, err := os.Pipe()
		if err != nil {
			return toPython(), nil
		}
		if len(prog) > 60000 { // beyond a pipe's buffer: Python's memfd
			return toPython(), nil
		}
		w.Write(prog)
		w.Close()
		extra = append(extra, r)
	}
	self, err := os.Executable()
	if err != nil {
		return toPython(), nil
	}
	lim := newLimits(p.Limits[0], p.Limits[1])
	defer lim.close()
	sandbox := argvOf(p, artifact, o.args, cwd, binds, e, "3")
	if os.Getenv("XARCH_LAUNCHER_DEBUG") == "argv" { // the sandbox command line, not run (tests compare it with Python's)
		json.NewEncoder(os.Stdout).Encode(sandbox)
		return 0, nil
	}
	argv := append(append([]string{self}, lim.preexecArgs()...), sandbox...)
	cmd := &exec.Cmd{Path: self, Args: argv, Stdin: os.Stdin, ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
	var errTail, outTail *tail
	var copies sync.WaitGroup
	for _, s := range []struct {
		f  *os.File
		t  **tail
		to *io.Writer
	}{{os.Stderr, &errTail, &cmd.Stderr}, {os.Stdout, &outTail, &cmd.Stdout}} {
		if isTerminal(s.f) {
			*s.to = s.f
			continue
		}
		t := &tail{}
		*s.t = t
		pr, pw, err := os.Pipe()
		if err != nil {
			return toPython(), nil
		}
		*s.to = pw
		copies.Add(1)
		go func(f *os.File, pr *os.File) { // streamed as it comes, and its tail kept
			defer copies.Done()
			io.Copy(io.MultiWriter(f, t), pr)
			pr.Close()
		}(s.f, pr)
		defer pw.Close()
	}
	// Ctrl-C kills the tree (status 130, as Python's KeyboardInterrupt); a SIGTERM, SIGHUP or go test's
	// SIGQUIT at its -timeout ends the tree too, and then this process by that signal
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	var got os.Signal
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "xrun exec: cannot start the sandbox: %v\n", err)
		return 3, nil
	}
	for _, f := range extra {
		f.Close()
	}
	for _, w := range []io.Writer{cmd.Stderr, cmd.Stdout} {
		if pw, ok := w.(*os.File); ok && pw != os.Stderr && pw != os.Stdout {
			pw.Close()
		}
	}
	killTree := func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var timedOut, interrupted bool
	var mu sync.Mutex
	if o.hasTimeout {
		t := time.AfterFunc(time.Duration(o.timeout*float64(time.Second)), func() {
			mu.Lock()
			timedOut = true
			mu.Unlock()
			killTree()
		})
		defer t.Stop()
	}
	go func() {
		for sg := range sigs {
			mu.Lock()
			interrupted, got = true, sg
			mu.Unlock()
			killTree()
		}
	}()
	werr := cmd.Wait()
	signal.Stop(sigs)
	waitCopies := make(chan struct{})
	go func() { copies.Wait(); close(waitCopies) }()
	select {
	case <-waitCopies:
	case <-time.After(5 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	if interrupted {
		killTree()
		if sg, ok := got.(syscall.Signal); ok && sg != syscall.SIGINT {
			return 128 + int(sg), nil
		}
		return 130, nil
	}
	if timedOut {
		fmt.Fprintf(os.Stderr, "xrun exec: timeout after %ss in %s; killed\n", strconv.FormatFloat(o.timeout, 'g', -1, 64), p.Cell)
		return 124, nil
	}
	rc := 0
	if werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			return 3, nil
		}
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			rc = -int(ws.Signal()) // as Popen gives it: execwrap's on_exit reads it so
		} else {
			rc = ws.ExitStatus()
		}
	}
	if rc == 0 {
		return 0, nil
	}
	rec := map[string]any{"rc": rc, "limits": lim.outcome(), "plan_limits": p.Limits}
	if errTail != nil {
		rec["stderr"] = hex.EncodeToString(errTail.buf)
	}
	if outTail != nil {
		rec["stdout"] = hex.EncodeToString(outTail.buf)
	}
	return rc, rec
}
