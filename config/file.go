package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"gateway/container"
	"gateway/sandbox"
)

//go:embed default.yaml
var defaultFile []byte

// File is the YAML configuration file: the sandboxes and containers to
// create at start, in the same shapes as the REST API's. The "host"
// sandbox exists whether listed or not.
type File struct {
	Sandboxes  []sandbox.Spec   `yaml:"sandboxes"`
	Containers []container.Spec `yaml:"containers"`
}

// DefaultFile returns the embedded default configuration.
func DefaultFile() *File {
	f, err := parseFile("default", defaultFile)
	if err != nil {
		panic(err) // the embedded file is tested
	}
	return f
}

// LoadFile reads and checks a configuration file.
func LoadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return parseFile(path, b)
}

// parseFile decodes strictly (an unknown key is an error that names it)
// and checks every value, naming the key of the first bad one.
func parseFile(name string, b []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file %s: %w", name, err)
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("config file %s: %w", name, err)
	}
	return &f, nil
}

func (f *File) validate() error {
	sandboxes := map[string]bool{sandbox.HostID: true}
	hostListed := false
	for i, s := range f.Sandboxes {
		key := fmt.Sprintf("sandboxes[%d]", i)
		if s.Network == "" {
			s.Network = sandbox.NetworkHost
		}
		if err := sandbox.Validate(s); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if s.ID == sandbox.HostID && s.Network != sandbox.NetworkHost {
			return fmt.Errorf("%s.network: the host sandbox is always the host network", key)
		}
		if sandboxes[s.ID] && (s.ID != sandbox.HostID || hostListed) {
			return fmt.Errorf("%s.id: %q is listed twice", key, s.ID)
		}
		sandboxes[s.ID] = true
		hostListed = hostListed || s.ID == sandbox.HostID
	}
	containers := map[string]bool{}
	for i, c := range f.Containers {
		key := fmt.Sprintf("containers[%d]", i)
		if c.ID == "" {
			return fmt.Errorf("%s.id: required", key)
		}
		if err := container.Validate(c); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if c.Sandbox != "" && !sandboxes[c.Sandbox] {
			return fmt.Errorf("%s.sandbox: %q is not a sandbox of this file", key, c.Sandbox)
		}
		if containers[c.ID] {
			return fmt.Errorf("%s.id: %q is listed twice", key, c.ID)
		}
		containers[c.ID] = true
	}
	return nil
}
