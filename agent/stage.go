package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// confirmer confirms an installed package to the gateway and returns the
// credential set's id.
type confirmer func(ctx context.Context, redemptionID string, sum []byte) (string, error)

// installStaged is fetchAndInstall into a staging directory made beside
// dir (the same filesystem, so each move is a rename; 0700, the key files
// in it 0600): the files appear in dir only once everything in the package
// verified and the gateway confirmed, so a failure at any step leaves dir
// as it was. The staging directory is removed, unless a move fails after
// the confirmation: then the error names it, with the files not yet moved.
func installStaged(ctx context.Context, dir, prefix string, o Options, open opener, confirm confirmer) (*Result, error) {
	staging, err := os.MkdirTemp(dir, prefix)
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(staging)
		}
	}()
	o.OutDir = staging
	res, err := fetchAndInstall(ctx, o, open, confirm)
	if err != nil {
		return nil, err
	}
	for i, f := range res.Files {
		if filepath.Dir(f) != staging {
			continue // an Options.Install hook's own file
		}
		dst := filepath.Join(dir, filepath.Base(f))
		if err := os.Rename(f, dst); err != nil {
			keep = true
			return nil, fmt.Errorf("agent: installed and confirmed, but moving %s into place failed (the files not yet moved are in %s): %w", dst, staging, err)
		}
		res.Files[i] = dst
	}
	if len(res.KeyHistoryFiles) > 0 {
		removeStaleKeyFiles(dir, res.KeyHistoryFiles, o.Events)
	}
	return res, nil
}

// removeStaleKeyFiles removes the one-key files of an earlier install
// (KeyFileName) that this one did not write: an earlier history key's name
// holds its position and date, so it would otherwise stay beside the new
// files as if it were part of the history. A failure is reported, not
// returned: the new files are in place and confirmed.
func removeStaleKeyFiles(dir string, keep []string, events func(Event)) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !keyFile.MatchString(e.Name()) || slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && events != nil {
			events(Event{Message: fmt.Sprintf("%s is from an earlier install and could not be removed: %v", e.Name(), err)})
		}
	}
}
