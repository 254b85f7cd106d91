package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcnet/svcnet/internal/storage"
)

// LIST paging (limit/continue), as kube-apiserver's etcd3 store does it:
// the first page is read at the latest revision (or the one asked for), and
// every following page at that same revision, starting after the last key
// returned. The continue token carries both; once etcd has compacted the
// revision, the next page fails with 410 Gone and the client starts over
// (client-go's pager falls back to a full list).

// continueToken is kube-apiserver's continue token, base64 of its JSON. Start
// is the next key to read, relative to the list's storage prefix.
type continueToken struct {
	APIVersion      string `json:"v"`
	ResourceVersion int64  `json:"rv"`
	StartKey        string `json:"start"`
}

const continueAPIVersion = "meta.k8s.io/v1"

func encodeContinue(start string, rev int64) (string, error) {
	data, err := json.Marshal(continueToken{APIVersion: continueAPIVersion, ResourceVersion: rev, StartKey: start})
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(data), nil
}

// decodeContinue returns the start key (relative to the list prefix) and
// the revision of a continue token.
func decodeContinue(token string) (string, int64, error) {
	data, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", 0, fmt.Errorf("continue key is not valid: %w", err)
	}
	var c continueToken
	if err := json.Unmarshal(data, &c); err != nil {
		return "", 0, fmt.Errorf("continue key is not valid: %w", err)
	}
	switch {
	case c.APIVersion != continueAPIVersion:
		return "", 0, fmt.Errorf("continue key is not supported (server may need to be upgraded)")
	case c.StartKey == "":
		return "", 0, fmt.Errorf("continue key is not valid: encoded start key empty")
	case c.ResourceVersion <= 0:
		return "", 0, fmt.Errorf("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
	}
	// Refuse keys that would escape the list's prefix.
	if cleaned := path.Clean(c.StartKey); cleaned != c.StartKey || cleaned == ".." || len(cleaned) > 2 && cleaned[:3] == "../" || cleaned[0] == '/' {
		return "", 0, fmt.Errorf("continue key is not valid: %s", c.StartKey)
	}
	return c.StartKey, c.ResourceVersion, nil
}

// errContinueExpired is kube-apiserver's 410 for a continue token whose
// revision has been compacted.
func errContinueExpired() error {
	return apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
}

// rangeLister is the optional ranged read a store may offer
// (storage/etcd.Store does); stores without it are read whole and sliced.
type rangeLister interface {
	ListRange(ctx context.Context, prefix, start string, rev, limit int64) (kvs []storage.KV, listRev int64, more bool, count int64, err error)
}

// listRange reads up to limit keys of prefix from prefix+start at rev.
func (s *Server) listRange(ctx context.Context, prefix, start string, rev, limit int64) ([]storage.KV, int64, bool, int64, error) {
	if rl, ok := s.store.(rangeLister); ok {
		return rl.ListRange(ctx, prefix, start, rev, limit)
	}
	kvs, listRev, err := s.store.List(ctx, prefix, rev)
	if err != nil {
		return nil, 0, false, 0, err
	}
	from := prefix + start
	i := sort.Search(len(kvs), func(i int) bool { return kvs[i].Key >= from })
	kvs = kvs[i:]
	count := int64(len(kvs))
	more := false
	if limit > 0 && int64(len(kvs)) > limit {
		kvs, more = kvs[:limit], true
	}
	return kvs, listRev, more, count, nil
}

// maxPageFetch bounds how many keys one storage read of a filtered page asks for.
const maxPageFetch = 10000

// listPage reads one page of at most limit matching objects, starting at
// start (relative to the list prefix), at rev (0 = latest). The list's
// continue token is set when more keys follow; remainingItemCount too when
// nothing is filtered. continued says whether start came from a token.
//
// raw, when not nil, splices the page into a protobuf body (the result is
// then a *rawList); pred is empty then.
func (s *Server) listPage(rq *request, res *resource, namespace string, pred predicate, rev, limit int64, start string, continued bool, raw *rawListBuilder) (runtime.Object, error) {
	prefix := res.listPrefix(namespace)
	firstStart, firstRev := start, rev
	fetch := limit
	var (
		b         *listBuilder
		matched   int64
		more      bool
		remaining int64
		lastKey   string
	)
	if raw == nil {
		b = s.newListBuilder(res, int(min(limit, maxPageFetch)))
	}
pages:
	for {
		kvs, listRev, m, count, err := s.listRangeAt(rq.ctx, prefix, start, rev, fetch, continued)
		if storage.IsExpired(err) {
			if continued {
				return nil, errContinueExpired()
			}
			return nil, apierrors.NewResourceExpired(fmt.Sprintf("The resourceVersion for the provided list is too old: %d", rev))
		}
		if err != nil {
			return nil, err
		}
		rev = listRev
		for i := range kvs {
			var ok bool
			if raw != nil {
				if ok = raw.add(&kvs[i]); !ok {
					// Not spliceable: read the page again, decoding.
					return s.listPage(rq, res, namespace, pred, firstRev, limit, firstStart, continued, nil)
				}
			} else if ok, err = b.add(&kvs[i], pred); err != nil {
				return nil, err
			}
			lastKey = kvs[i].Key
			if ok {
				matched++
			}
			if limit > 0 && matched == limit {
				more = m || i < len(kvs)-1
				remaining = count - int64(i+1)
				break pages
			}
		}
		if !m || len(kvs) == 0 {
			break
		}
		start = lastKey[len(prefix):] + "\x00"
		fetch = min(2*fetch, maxPageFetch)
	}
	var token string
	var remainingPtr *int64
	if more {
		var err error
		if token, err = encodeContinue(lastKey[len(prefix):]+"\x00", rev); err != nil {
			return nil, err
		}
		if pred.empty() && remaining > 0 {
			remainingPtr = &remaining
		}
	}
	if raw != nil {
		return raw.finish(rev, token, remainingPtr)
	}
	list, lm, err := b.finish(rev)
	if err != nil {
		return nil, err
	}
	lm.SetContinue(token)
	lm.SetRemainingItemCount(remainingPtr)
	return list, nil
}
