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
