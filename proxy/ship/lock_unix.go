//go:build unix

package ship

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive advisory lock on dir/LOCK so that two
// processes (or two Shippers) never write the same spool. The lock goes
// away with the returned file (or the process).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ship: spool lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("ship: spool dir %s is in use by another llmtap process (give each proxy its own proxy.spool_dir)", dir)
		}
		return nil, fmt.Errorf("ship: spool lock: %w", err)
	}
	return f, nil
}
