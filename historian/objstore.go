package historian

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ObjectStore is where the Parquet tier keeps its files: a local directory
// (DirStore) or an S3-compatible bucket (S3Store). Keys are slash-separated
// paths relative to the store's root.
type ObjectStore interface {
	// Put stores size bytes from r under key, replacing any object there.
	// When it returns nil the object is durable.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Open opens the object under key for random access.
	Open(ctx context.Context, key string) (Object, error)
	// Delete removes the object under key; a missing object is no error.
	Delete(ctx context.Context, key string) error
	// List returns the keys that start with prefix.
	List(ctx context.Context, prefix string) ([]string, error)
}

// Object is an open stored object.
type Object interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// DirStore is an ObjectStore in a local directory (which may be a mounted
// network file system).
type DirStore struct{ Root string }

func (d DirStore) path(key string) (string, error) {
	if key == "" || !fs.ValidPath(key) {
		return "", fmt.Errorf("historian: tier: bad object key %q", key)
	}
	return filepath.Join(d.Root, filepath.FromSlash(key)), nil
}

// Put writes the object through a synced temporary file and a rename.
func (d DirStore) Put(_ context.Context, key string, r io.Reader, size int64) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeFileAtomic(dir, filepath.Base(p), func(w io.Writer) error {
		n, err := io.Copy(w, r)
		if err == nil && n != size {
			err = fmt.Errorf("historian: tier: wrote %d bytes of %d", n, size)
		}
		return err
	})
}

type fileObject struct {
	*os.File
	size int64
}

func (f fileObject) Size() int64 { return f.size }

// Open opens the object's file.
func (d DirStore) Open(_ context.Context, key string) (Object, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileObject{f, st.Size()}, nil
}

// Delete removes the object's file.
func (d DirStore) Delete(_ context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// List walks the directory for keys with the prefix.
func (d DirStore) List(_ context.Context, prefix string) ([]string, error) {
	var keys []string
	err := filepath.WalkDir(d.Root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || strings.Contains(e.Name(), ".tmp") {
			return nil
		}
		rel, err := filepath.Rel(d.Root, p)
		if err != nil {
			return err
		}
		if k := filepath.ToSlash(rel); strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
		return nil
	})
	return keys, err
}

// S3Options locate an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...).
type S3Options struct {
	// Endpoint is host[:port], without a scheme (e.g. s3.amazonaws.com,
	// 127.0.0.1:9000).
	Endpoint string
	// Bucket must exist unless CreateBucket is set.
	Bucket string
	// Prefix is prepended to every key ("plant1/historian/"); may be empty.
	Prefix string
	// AccessKey and SecretKey are static credentials; both empty means
	// anonymous access.
	AccessKey, SecretKey string
	// Region is the bucket's region (empty: discovered by the client).
	Region string
	// UseTLS selects https.
	UseTLS bool
	// CreateBucket creates the bucket if it does not exist.
	CreateBucket bool
}

// S3Store is an ObjectStore in an S3-compatible bucket, through minio-go.
type S3Store struct {
	c      *minio.Client
	bucket string
	prefix string
}

// NewS3Store connects to the bucket of o (creating it if o.CreateBucket).
func NewS3Store(ctx context.Context, o S3Options) (*S3Store, error) {
	if o.Endpoint == "" || o.Bucket == "" {
		return nil, errors.New("historian: tier: S3 needs an endpoint and a bucket")
	}
	var creds *credentials.Credentials
	if o.AccessKey != "" || o.SecretKey != "" {
		creds = credentials.NewStaticV4(o.AccessKey, o.SecretKey, "")
	} else {
		creds = credentials.New(&credentials.Static{}) // anonymous
	}
	c, err := minio.New(o.Endpoint, &minio.Options{Creds: creds, Secure: o.UseTLS, Region: o.Region,
		BucketLookup: minio.BucketLookupPath})
	if err != nil {
		return nil, fmt.Errorf("historian: tier: %w", err)
	}
	if o.CreateBucket {
		ok, err := c.BucketExists(ctx, o.Bucket)
		if err != nil {
			return nil, fmt.Errorf("historian: tier: bucket %s: %w", o.Bucket, err)
		}
		if !ok {
			if err := c.MakeBucket(ctx, o.Bucket, minio.MakeBucketOptions{Region: o.Region}); err != nil {
				return nil, fmt.Errorf("historian: tier: create bucket %s: %w", o.Bucket, err)
			}
		}
	}
	return &S3Store{c: c, bucket: o.Bucket, prefix: strings.Trim(o.Prefix, "/")}, nil
}

func (s *S3Store) key(k string) string {
	if s.prefix == "" {
		return k
	}
	return s.prefix + "/" + k
}

// Put uploads the object; S3 makes it visible only once complete.
func (s *S3Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	_, err := s.c.PutObject(ctx, s.bucket, s.key(key), r, size,
		minio.PutObjectOptions{ContentType: "application/vnd.apache.parquet"})
	if err != nil {
		return fmt.Errorf("historian: tier: put %s: %w", s.key(key), err)
	}
	return nil
}

type s3Object struct {
	*minio.Object
	size int64
}

func (o s3Object) Size() int64 { return o.size }

// Open returns the object for ranged reads.
func (s *S3Store) Open(ctx context.Context, key string) (Object, error) {
	o, err := s.c.GetObject(ctx, s.bucket, s.key(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("historian: tier: get %s: %w", s.key(key), err)
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("historian: tier: get %s: %w", s.key(key), err)
	}
	return s3Object{o, st.Size}, nil
}

// Delete removes the object.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	err := s.c.RemoveObject(ctx, s.bucket, s.key(key), minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
		return fmt.Errorf("historian: tier: delete %s: %w", s.key(key), err)
	}
	return nil
}

// List lists the keys under the prefix.
func (s *S3Store) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	full := s.key(prefix)
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("historian: tier: list %s: %w", full, o.Err)
		}
		keys = append(keys, strings.TrimPrefix(o.Key, s.key("")))
	}
	return keys, nil
}
