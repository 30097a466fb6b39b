// The run itself (execplan.launch, proc.run_attached).
package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

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

// launch runs the binary through the plan; the status, the record of an exit to explain (nil for
// none), and why Python must run it instead ("" when it ran).
func launch(p *plan, artifact string, o options, cwd string, binds []bind, e *env) (int, map[string]any, string) {
	var core syscall.Rlimit // children inherit RLIMIT_CORE=0 (proc.disable_core_dumps)
	if syscall.Getrlimit(syscall.RLIMIT_CORE, &core) == nil {
		syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: core.Max})
	}
	var extra []*os.File
	if p.Seccomp != nil {
		prog, err := hex.DecodeString(*p.Seccomp)
		if err != nil {
			return 0, nil, "plan with a bad seccomp program"
		}
		if len(prog) > 60000 { // beyond a pipe's buffer: Python's memfd
			return 0, nil, "a seccomp program beyond a pipe's buffer"
		}
		r, w, err := os.Pipe()
		if err != nil {
			return 0, nil, "no pipe for the seccomp program"
		}
		w.Write(prog)
		w.Close()
		extra = append(extra, r)
	}
	self, err := os.Executable()
	if err != nil {
		return 0, nil, "cannot find its own executable"
	}
	lim := newLimits(p.Limits[0], p.Limits[1])
	defer lim.close()
	sandbox := argvOf(p, artifact, o.args, cwd, binds, e, "3")
	if os.Getenv("XARCH_LAUNCHER_DEBUG") == "argv" { // the sandbox command line, not run (tests compare it with Python's)
		json.NewEncoder(os.Stdout).Encode(sandbox)
		return 0, nil, ""
	}
	argv := append(append([]string{self}, lim.preexecArgs(len(extra))...), sandbox...)
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
			return 0, nil, "no pipe for the output"
		}
		*s.to = pw
		copies.Add(1)
		go copyTail(s.f, pr, t, &copies)
		defer pw.Close()
	}
	// Ctrl-C kills the tree (status 130, as Python's KeyboardInterrupt); a SIGTERM or SIGHUP kills it
	// and then this process by that signal, after cleaning up; go test's SIGQUIT at its -timeout ends
	// it with status 131 (not Go's goroutine dump of this launcher)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "xrun exec: cannot start the sandbox: %v\n", err)
		return 3, nil, ""
	}
	for _, f := range extra {
		f.Close()
	}
	for _, w := range []io.Writer{cmd.Stderr, cmd.Stdout} {
		if pw, ok := w.(*os.File); ok && pw != os.Stderr && pw != os.Stdout {
			pw.Close()
		}
	}
	// the timer and the signals kill the tree only while it runs: once reaped, its process group id
	// may be another's
	var mu sync.Mutex
	var timedOut, reaped bool
	var got os.Signal
	killTree := func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if o.hasTimeout {
		t := time.AfterFunc(time.Duration(o.timeout*float64(time.Second)), func() {
			mu.Lock()
			defer mu.Unlock()
			if !reaped {
				timedOut = true
				killTree()
			}
		})
		defer t.Stop()
	}
	go func() {
		for sg := range sigs {
			mu.Lock()
			if got == nil {
				got = sg
			}
			if !reaped {
				killTree()
			}
			mu.Unlock()
		}
	}()
	werr := cmd.Wait()
	mu.Lock()
	reaped = true
	mu.Unlock()
	waitCopies := make(chan struct{})
	go func() { copies.Wait(); close(waitCopies) }()
	select {
	case <-waitCopies:
	case <-time.After(5 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	if got != nil {
		switch sg := got.(syscall.Signal); sg {
		case syscall.SIGINT:
			return 130, nil, ""
		case syscall.SIGTERM, syscall.SIGHUP:
			reraise = sg
		}
		return 128 + int(got.(syscall.Signal)), nil, ""
	}
	if timedOut {
		fmt.Fprintf(os.Stderr, "xrun exec: timeout after %ss in %s; killed\n", pyG(o.timeout), p.Cell)
		return 124, nil, ""
	}
	rc := 0
	if werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			return 3, nil, ""
		}
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			rc = -int(ws.Signal()) // as Popen gives it: execwrap's on_exit reads it so
		} else {
			rc = ws.ExitStatus()
		}
	}
	if rc == 0 {
		return 0, nil, ""
	}
	rec := map[string]any{"rc": rc, "limits": lim.outcome(), "plan_limits": p.Limits}
	if errTail != nil {
		rec["stderr"] = hex.EncodeToString(errTail.buf)
	}
	if outTail != nil {
		rec["stdout"] = hex.EncodeToString(outTail.buf)
	}
	return rc, rec, ""
}

// reraise is the signal this process dies by once it has cleaned up (SIGTERM, SIGHUP), as Python does.
var reraise syscall.Signal

// copyTail streams a pipe to this process's stdout or stderr and keeps its tail. When that output
// is gone (a reader that quit: EPIPE), the pipe is closed, so the binary meets the closed pipe as it
// would natively, and the run ends with its status.
func copyTail(to, pr *os.File, t *tail, wg *sync.WaitGroup) {
	defer wg.Done()
	defer pr.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := pr.Read(buf)
		if n > 0 {
			t.Write(buf[:n])
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// pyG is Python's f"{x:g}": six significant digits, trailing zeros dropped.
func pyG(x float64) string { return strconv.FormatFloat(x, 'g', 6, 64) }
