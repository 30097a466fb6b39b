// What the binary sees: its environment and its view of the host (execview.py).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

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
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue // os.environ skips an entry without "="
		}
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

// realpath is os.path.realpath: symlinks resolved as far as the path exists, the rest appended.
func realpath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		if a, err := filepath.Abs(r); err == nil {
			return a
		}
	}
	parent := pparent(p)
	if parent == p || p == "/" {
		return pnorm(p)
	}
	return pjoin(realpath(parent), p[strings.LastIndexByte(p, '/')+1:])
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
	// where a path really is decides (go test names the package dir as $PWD spells it, which may pass
	// through a symlink); the bind keeps the path the binary was given
	for _, name := range order {
		v := flags[name]
		if contains(r.DirFlags, name) {
			d := pjoin(cwd, v)
			if !within(realpath(d), inside) && !within(cwd, realpath(d)) {
				add(wpath{d, false})
			}
			continue
		}
		f := pjoin(outdir, v)
		if within(realpath(f), inside) || within(cwd, pparent(realpath(f))) {
			add(wpath{f, true})
		} else {
			add(wpath{pparent(f), false})
		}
	}
	if g, ok := e.get("GOCOVERDIR"); ok && g != "" && !within(realpath(pjoin(cwd, g)), inside) {
		add(wpath{pjoin(cwd, g), false}) // relative: to the working directory, as go test means it
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

// copyTree is shutil.copytree(symlinks=True): files as copyFile, and each directory's mode and times
// copied last, deepest first (a read-only testdata/ stays read-only in the copy).
func copyTree(src, dst string) error {
	type dirInfo struct {
		path string
		info fs.FileInfo
	}
	var dirs []dirInfo
	err := filepath.WalkDir(src, func(p string, de fs.DirEntry, err error) error {
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
			dirs = append(dirs, dirInfo{to, info})
			return os.MkdirAll(to, 0o700)
		case info.Mode().IsRegular():
			return copyFile(p, to, info)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chmod(dirs[i].path, dirs[i].info.Mode().Perm())
		os.Chtimes(dirs[i].path, dirs[i].info.ModTime(), dirs[i].info.ModTime())
	}
	return nil
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
			if real := realpath(w.path); copied && within(real, cwd) {
				rel := strings.TrimPrefix(strings.TrimPrefix(real, cwd), "/")
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
