package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

var chainsBucket = []byte("chains")

// Store records chain ID → layer source. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// OpenStore opens (or creates) the record at path.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open chain record %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(chainsBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open chain record %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the record.
func (s *Store) Close() error { return s.db.Close() }

type record struct {
	Host       string             `json:"host"`
	Repository string             `json:"repository"`
	Blob       ocispec.Descriptor `json:"blob"`
	DiffID     digest.Digest      `json:"diffID"`
}

// Put records the source of the layer that completes chain chainID.
func (s *Store) Put(chainID digest.Digest, src seed.Source) error {
	b, err := json.Marshal(record{src.Host, src.Repository, src.Blob, src.DiffID})
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(chainsBucket).Put([]byte(chainID), b)
	})
}

// Get returns the source recorded for chainID, or an error wrapping errdefs.ErrNotFound.
func (s *Store) Get(chainID digest.Digest) (seed.Source, error) {
	var r record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(chainsBucket).Get([]byte(chainID))
		if b == nil {
			return fmt.Errorf("chain %s not seen by the mirror: %w", chainID, errdefs.ErrNotFound)
		}
		return json.Unmarshal(b, &r)
	})
	if err != nil {
		return seed.Source{}, err
	}
	return seed.Source{Host: r.Host, Repository: r.Repository, Blob: r.Blob, DiffID: r.DiffID}, nil
}

// ResolveLayer answers the snapshotter from the record (snapshotter.LayerResolver).
func (s *Store) ResolveLayer(_ context.Context, chainID string, _ map[string]string) (seed.Source, error) {
	return s.Get(digest.Digest(chainID))
}
