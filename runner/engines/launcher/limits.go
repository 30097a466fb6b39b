// The cell's limits (limits.py): its cgroups, else rlimits, joined by the child stage.
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

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
			if own, ok := member[ctrl]; ok && m.fstype == "cgroup" && m.opts[ctrl] {
				if o := cgJoin(m.point, m.root, own); writableDir(o) {
					found[ctrl] = controller{1, filepath.Join(o, "xarch-"+tag)}
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
func (cl *cellLimits) preexecArgs(keep int) []string {
	seen := map[string]bool{}
	var procs []string
	for _, ctrl := range []string{"memory", "pids"} {
		if d, ok := cl.dirs[ctrl]; ok && !seen[d] {
			seen[d] = true
			procs = append(procs, filepath.Join(d, "cgroup.procs"))
		}
	}
	return []string{preexecMark, strings.Join(procs, "\x01"), strconv.FormatInt(cl.data, 10), strconv.FormatInt(cl.nproc, 10),
		strconv.Itoa(keep), "--"}
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
	if len(a) < 6 || a[4] != "--" {
		os.Exit(3)
	}
	// only stdio and the fds the launcher handed on reach the sandbox (Popen's close_fds): what the
	// launcher itself inherited (go test's, a shell's redirections) is closed at exec
	keep, _ := strconv.Atoi(a[3])
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3+keep {
				syscall.CloseOnExec(fd)
			}
		}
	} else {
		fmt.Fprintf(os.Stderr, "xrun exec: cannot list the open files (%v)\n", err)
		os.Exit(125)
	}
	if a[0] != "" {
		for _, p := range strings.Split(a[0], "\x01") {
			if err := writeFile(p, "0"); err != nil {
				fmt.Fprintf(os.Stderr, "xrun exec: cannot join the cell's cgroup %s: %v\n", p, err)
				os.Exit(125)
			}
		}
	}
	for i, res := range []int{syscall.RLIMIT_DATA, 6 /* RLIMIT_NPROC */} {
		if n, _ := strconv.ParseUint(a[1+i], 10, 64); n > 0 {
			if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
				fmt.Fprintf(os.Stderr, "xrun exec: cannot set the cell's rlimit %d to %d: %v\n", res, n, err)
				os.Exit(125)
			}
		}
	}
	argv := a[5:]
	err := execvp(argv)
	fmt.Fprintf(os.Stderr, "xrun exec: cannot start %s: %v\n", argv[0], err)
	os.Exit(127)
}
