package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
)

// step is the testing.TB that containerdenv's helpers are given outside of `go test`: one
// step of the benchmark (an environment's life), run by runStep. Fatal ends the step and runs
// its cleanups, last registered first, as a test would; Log goes to the progress output.
//
// testing.TB has an unexported method, so a type outside package testing can only satisfy it
// by embedding it: the embedded value stays nil, and every exported method is defined here.
type step struct {
	testing.TB
	name string
	out  io.Writer
	ctx  context.Context

	mu       sync.Mutex
	failed   bool
	errs     []string
	cleanups []func()
}

// errStepFatal is the panic value with which Fatal leaves a step.
var errStepFatal = errors.New("step failed")

// runStep runs f as the step name, then its cleanups, and returns the errors it reported.
func runStep(ctx context.Context, name string, out io.Writer, f func(t *step)) (err error) {
	t := &step{name: name, out: out, ctx: ctx}
	defer func() {
		t.runCleanups()
		if t.Failed() {
			err = fmt.Errorf("%s: %s", name, strings.Join(t.errs, "; "))
		}
	}()
	defer func() {
		if r := recover(); r != nil && r != errStepFatal {
			t.fail(fmt.Sprintf("panic: %v", r))
		}
	}()
	f(t)
	return nil
}

func (t *step) runCleanups() {
	for {
		t.mu.Lock()
		if len(t.cleanups) == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[len(t.cleanups)-1]
		t.cleanups = t.cleanups[:len(t.cleanups)-1]
		t.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil && r != errStepFatal {
					t.fail(fmt.Sprintf("cleanup panic: %v", r))
				}
			}()
			f()
		}()
	}
}

func (t *step) fail(msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = true
	t.errs = append(t.errs, msg)
	fmt.Fprintf(t.out, "%s: ERROR: %s\n", t.name, msg)
}

func (t *step) Helper()          {}
func (t *step) Name() string     { return t.name }
func (t *step) Attr(_, _ string) {}
func (t *step) Output() io.Writer {
	return t.out
}
func (t *step) Log(args ...any) {
	fmt.Fprintf(t.out, "%s: %s\n", t.name, strings.TrimSuffix(fmt.Sprintln(args...), "\n"))
}
func (t *step) Logf(format string, args ...any) {
	fmt.Fprintf(t.out, "%s: %s\n", t.name, fmt.Sprintf(format, args...))
}
func (t *step) Error(args ...any)                 { t.fail(strings.TrimSuffix(fmt.Sprintln(args...), "\n")) }
func (t *step) Errorf(format string, args ...any) { t.fail(fmt.Sprintf(format, args...)) }
func (t *step) Fail()                             { t.fail("failed") }
func (t *step) FailNow()                          { t.fail("failed"); panic(errStepFatal) }
func (t *step) Fatal(args ...any)                 { t.Error(args...); panic(errStepFatal) }
func (t *step) Fatalf(format string, args ...any) { t.Errorf(format, args...); panic(errStepFatal) }
func (t *step) Skip(args ...any)                  { t.Fatal(append([]any{"skipped:"}, args...)...) }
func (t *step) Skipf(format string, args ...any)  { t.Fatalf("skipped: "+format, args...) }
func (t *step) SkipNow()                          { t.Fatal("skipped") }
func (t *step) Skipped() bool                     { return false }
func (t *step) Context() context.Context          { return t.ctx }

func (t *step) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *step) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *step) TempDir() string {
	d, err := os.MkdirTemp("", "lazybench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (t *step) ArtifactDir() string { return t.TempDir() }

// Setenv and Chdir change the whole process: a benchmark step has no business doing that.
func (t *step) Setenv(key, _ string) { t.Fatalf("Setenv(%s) is not supported here", key) }
func (t *step) Chdir(dir string)     { t.Fatalf("Chdir(%s) is not supported here", dir) }
