// Package homedir creates project home directories on the shared volume as
// mounted in the server pod, owned by the project user, before the
// project's pod starts (the kubelet would otherwise create a root-owned
// directory for a subPath, or the NFS mount would fail outright).
//
// Path escapes are impossible by construction: the only name ever joined to
// the root is a validated canonical UUID, and the directory is opened with
// O_NOFOLLOW so a symlink planted in place of a home is refused instead of
// followed (ownership changes go through the opened descriptor, never the
// path, so a symlink swapped in after the check is not followed either).
package homedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// DefaultMode is private to the project user: projects never see each
// other's homes (each pod mounts only its own directory), and in the server
// pod the orchestrator and hub run as that same uid (the image's USER
// 2001:2001), so they can still read .smc/secret_token. Running as the
// project uid also means a new home is owned correctly without CAP_CHOWN.
const DefaultMode fs.FileMode = 0o700

// ErrUnsafeHome is wrapped when a home exists but is not a plain directory.
var ErrUnsafeHome = errors.New("unsafe project home")

// Maker creates homes under Root.
type Maker struct {
	// Root is the homes directory (template storage.serverPath). It must
	// exist: creating it would hide a missing volume mount.
	Root string
	UID  int
	GID  int
	Mode fs.FileMode
}

// Path returns the home of a project (validated ID only).
func (m Maker) Path(id project.ID) (string, error) {
	if err := id.Validate(); err != nil {
		return "", err
	}
	return filepath.Join(m.Root, id.String()), nil
}

// Ensure creates the project's home if missing and makes sure the top
// directory is owned by UID:GID. It does not recurse: existing content is
// the project's own business.
func (m Maker) Ensure(id project.ID) (string, error) {
	home, err := m.Path(id)
	if err != nil {
		return "", err
	}
	root, err := os.Stat(m.Root)
	if err != nil {
		return "", fmt.Errorf("project homes root: %w", err)
	}
	if !root.IsDir() {
		return "", fmt.Errorf("project homes root %s is not a directory", m.Root)
	}
	mode := m.Mode
	if mode == 0 {
		mode = DefaultMode
	}
	created := false
	if err := os.Mkdir(home, mode); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("create project home: %w", err)
	}
	f, err := os.OpenFile(home, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
			return "", fmt.Errorf("%w: %s is a symlink or not a directory", ErrUnsafeHome, home)
		}
		return "", fmt.Errorf("open project home: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat project home: %w", err)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("stat project home %s: no ownership information", home)
	}
	if int(st.Uid) != m.UID || int(st.Gid) != m.GID {
		if err := f.Chown(m.UID, m.GID); err != nil {
			return "", fmt.Errorf("chown project home %s to %d:%d: %w", home, m.UID, m.GID, err)
		}
	}
	if created {
		// Mkdir's mode is reduced by the umask; set it exactly.
		if err := f.Chmod(mode); err != nil {
			return "", fmt.Errorf("chmod project home %s: %w", home, err)
		}
	}
	return home, nil
}
