package membership

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/store"
)

// SupernodeGrant is what a supernode token admits: one named supernode at
// one store peer URL.
type SupernodeGrant struct {
	Name    string `json:"name"`
	PeerURL string `json:"peer_url"`
	Standby bool   `json:"standby,omitempty"`
}

// TokenHash is the store key of a token: its SHA-256 in hex.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// tokenPrefix marks fedkeeper join tokens so that a token pasted in the
// wrong place is recognisable.
const tokenPrefix = "fkt_"

// CreateToken makes a join token good for uses joins within ttl, limited
// to project unless project is empty. The token is returned once and only
// its hash is stored.
func (s *Service) CreateToken(ctx context.Context, project string, uses int, ttl time.Duration, by string) (string, Token, error) {
	if project != "" {
		if err := ValidateProject(project); err != nil {
			return "", Token{}, err
		}
	}
	if uses < 1 || uses > 100000 {
		return "", Token{}, invalid("uses must be between 1 and 100000, not %d", uses)
	}
	return s.createToken(ctx, Token{Project: project, UsesLeft: uses, CreatedBy: by}, ttl)
}

// CreateSupernodeToken makes a single-use token that admits the supernode
// of grant.
func (s *Service) CreateSupernodeToken(ctx context.Context, grant SupernodeGrant, ttl time.Duration, by string) (string, Token, error) {
	return s.createToken(ctx, Token{Supernode: &grant, UsesLeft: 1, CreatedBy: by}, ttl)
}

func (s *Service) createToken(ctx context.Context, tok Token, ttl time.Duration) (string, Token, error) {
	if ttl < time.Minute || ttl > 365*24*time.Hour {
		return "", Token{}, invalid("ttl must be between 1m and 8760h, not %s", ttl)
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return "", Token{}, fmt.Errorf("make token: %w", err)
	}
	token := tokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	now := time.Now().UTC()
	tok.ExpiresAt, tok.CreatedAt = now.Add(ttl), now
	// The token record expires with the token, so used tokens do not pile up.
	lease, err := s.kv.Grant(ctx, int64(ttl/time.Second)+1)
	if err != nil {
		return "", Token{}, fmt.Errorf("grant token lease: %w", err)
	}
	if _, err := s.kv.Put(ctx, prefixTokens+TokenHash(token), store.MustJSON(tok), clientv3.WithLease(lease.ID)); err != nil {
		return "", Token{}, fmt.Errorf("store token: %w", err)
	}
	s.log.Info("join token created", "project", tok.Project, "uses", tok.UsesLeft, "supernode", tok.Supernode != nil, "expires", tok.ExpiresAt, "by", tok.CreatedBy)
	return token, tok, nil
}

// errCompareFailed says a spend's own conditions did not hold; the token
// was not spent.
var errCompareFailed = errors.New("conditions of the spend no longer hold")

// spendToken uses up one use of token, if check accepts it, in the same
// transaction as ops and only if cmps hold; it returns the token as it was
// before. Another supernode may spend the same token between the read and
// the write: the compare on the token's revision catches that, and the
// token is read again.
func (s *Service) spendToken(ctx context.Context, token string, check func(Token) error, cmps []clientv3.Cmp, ops ...clientv3.Op) (Token, error) {
	key := prefixTokens + TokenHash(token)
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	for range 20 {
		tok, rev, err := s.readToken(ctx, token, check)
		if err != nil {
			return Token{}, err
		}
		spent := tok
		spent.UsesLeft--
		resp, err := s.kv.Txn(ctx).
			If(append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)}, cmps...)...).
			Then(append([]clientv3.Op{clientv3.OpPut(key, store.MustJSON(spent), clientv3.WithIgnoreLease())}, ops...)...).
			Commit()
		if err != nil {
			return Token{}, fmt.Errorf("spend token: %w", err)
		}
		if resp.Succeeded {
			return tok, nil
		}
		// Either the token moved (read it again) or the caller's
		// conditions failed (tell it so).
		now, err := s.kv.Get(ctx, key)
		if err != nil {
			return Token{}, fmt.Errorf("re-read token: %w", err)
		}
		if len(now.Kvs) == 1 && now.Kvs[0].ModRevision == rev {
			return Token{}, errCompareFailed
		}
	}
	return Token{}, fmt.Errorf("%w: token is contended; try again", ErrConflict)
}

// readToken reads token and checks it is still good and accepted by check.
func (s *Service) readToken(ctx context.Context, token string, check func(Token) error) (Token, int64, error) {
	var tok Token
	rev, err := store.GetJSON(ctx, s.kv, prefixTokens+TokenHash(token), &tok)
	if errors.Is(err, store.ErrNotFound) {
		return Token{}, 0, fmt.Errorf("%w: token is not valid in this federation", ErrToken)
	}
	if err != nil {
		return Token{}, 0, err
	}
	if time.Now().After(tok.ExpiresAt) {
		return Token{}, 0, fmt.Errorf("%w: token expired at %s", ErrToken, tok.ExpiresAt.Format(time.RFC3339))
	}
	if tok.UsesLeft <= 0 {
		return Token{}, 0, fmt.Errorf("%w: token has been used up", ErrToken)
	}
	if err := check(tok); err != nil {
		return Token{}, 0, err
	}
	return tok, rev, nil
}

// CheckSupernodeToken tells, without spending it, whether token admits
// the supernode name, and what it grants.
func (s *Service) CheckSupernodeToken(ctx context.Context, token, name string) (SupernodeGrant, error) {
	tok, _, err := s.readToken(ctx, token, supernodeCheck(name))
	if err != nil {
		return SupernodeGrant{}, err
	}
	return *tok.Supernode, nil
}

func supernodeCheck(name string) func(Token) error {
	return func(tok Token) error {
		if tok.Supernode == nil {
			return fmt.Errorf("%w: token is a member join token, not a supernode token", ErrToken)
		}
		if tok.Supernode.Name != name {
			return fmt.Errorf("%w: token is for supernode %q, not %q", ErrToken, tok.Supernode.Name, name)
		}
		return nil
	}
}

// SpendSupernodeToken spends a supernode token for the supernode name and
// returns what it grants.
func (s *Service) SpendSupernodeToken(ctx context.Context, token, name string) (SupernodeGrant, error) {
	tok, err := s.spendToken(ctx, token, supernodeCheck(name), nil)
	if err != nil {
		return SupernodeGrant{}, err
	}
	return *tok.Supernode, nil
}
