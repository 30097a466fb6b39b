// The cached plan (execplan.py): its key, its stamps, and its command line (argvOf).
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
)

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
