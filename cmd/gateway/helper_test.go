package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
)

// helperArg makes the test binary a small network tool, so that tests can
// run servers and clients inside sandboxes with nothing else installed:
//
//	gateway.test gwtest-helper serve ADDR   echo server: answers each line with "echo:" + line
//	gateway.test gwtest-helper dial ADDR MSG   sends MSG, prints the answer
const helperArg = "gwtest-helper"

func helperMain(args []string) int {
	switch {
	case len(args) == 2 && args[0] == "serve":
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("listening")
		for {
			c, err := ln.Accept()
			if err != nil {
				return 1
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "echo:%s\n", sc.Text())
				}
			}()
		}
	case len(args) == 3 && args[0] == "dial":
		c, err := net.Dial("tcp", args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		fmt.Fprintln(c, args[2])
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && err != io.EOF {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Print(line)
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: gwtest-helper serve ADDR | dial ADDR MSG")
	return 2
}

// helperCommand is the argv that runs the helper.
func helperCommand(t *testing.T, args ...string) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{self, helperArg}, args...)
}

// needRoot skips tests that create network namespaces, saying why.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: network namespaces need root (CAP_SYS_ADMIN); CI runs as root")
	}
}

// freePort returns a port nothing listens on, on the host's loopback.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
