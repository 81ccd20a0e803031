package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// netns is a network namespace held open by a file descriptor: the
// namespace lives as long as the descriptor (or a process inside it), and
// nothing is mounted.
type netns struct {
	f *os.File
}

// newNetns creates a network namespace with its loopback interface up.
// It needs CAP_SYS_ADMIN.
func newNetns() (*netns, error) {
	var ns *netns
	err := onNewThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); errors.Is(err, unix.EPERM) {
			return fmt.Errorf("unshare: %w (the gateway needs CAP_SYS_ADMIN: run it as root)", err)
		} else if err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			return err
		}
		if err := loopbackUp(); err != nil {
			f.Close()
			return err
		}
		ns = &netns{f: f}
		return nil
	})
	return ns, err
}

// openNetns holds an existing network namespace, by path: a file under
// /run/netns (ip netns add), or /proc/<pid>/ns/net.
func openNetns(path string) (*netns, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	err = unix.Fstatfs(int(f.Fd()), &st)
	if err == nil && st.Type != unix.NSFS_MAGIC {
		err = fmt.Errorf("%s is not a namespace", path)
	}
	if err == nil {
		var kind int
		kind, err = unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
		if err == nil && kind != unix.CLONE_NEWNET {
			err = fmt.Errorf("%s is a namespace, but not a network namespace", path)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &netns{f: f}, nil
}

// do runs fn on a locked OS thread that has joined the namespace. The
// thread is thrown away afterwards rather than switched back, so no other
// goroutine can ever run in the sandbox's network by accident.
func (n *netns) do(fn func() error) error {
	return onNewThread(func() error {
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns: %w", err)
		}
		return fn()
	})
}

func (n *netns) close() error { return n.f.Close() }

// onNewThread runs fn on a goroutine locked to its OS thread, and lets the
// runtime end that thread when fn returns (the goroutine exits locked).
func onNewThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread's namespace was changed, so it
		// must die with this goroutine.
		errc <- fn()
	}()
	return <-errc
}

// loopbackUp sets the "lo" interface of the current network namespace up.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return errors.Join(fmt.Errorf("loopback up: %w", err))
	}
	return nil
}
