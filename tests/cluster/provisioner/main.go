// Command provisioner binds PersistentVolumeClaims of the StorageClasses naming it by
// creating a hostPath PersistentVolume per claim, deletes released volumes it created
// (unless their reclaim policy is Retain), and grows them as an external resizer would when a claim of a class that allows expansion
// asks for more.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const provisionedBy = "pv.kubernetes.io/provisioned-by"

// The PV controller names the provisioner on a claim only once it found no existing
// volume to bind it to (such as a retained volume pre-bound to the claim).
const (
	storageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	betaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
)

type provisioner struct {
	// One token per claim being provisioned or resized: they run in parallel, up to its capacity.
	slots   chan struct{}
	client  kubernetes.Interface
	name    string
	classes storagelisters.StorageClassLister
	baseDir string
	// How long a resize takes: a real one takes a while, and what waits on it (a tenant's
	// Resizing status) must show in between.
	resizeDelay time.Duration
	// Claims being resized (by UID): a resize's own status updates bring the claim again.
	resizing sync.Map
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to the kubeconfig")
	name := flag.String("provisioner-name", "neurallog.io/test-provisioner", "provisioner name of the StorageClasses served")
	resizeDelay := flag.Duration("resize-delay", 2*time.Second, "how long growing a volume takes")
	baseDir := flag.String("base-dir", "/tmp/neurallog-pv", "hostPath root recorded in the volumes")
	qps := flag.Float64("kube-api-qps", 200, "client-side request rate limit")
	burst := flag.Int("kube-api-burst", 400, "client-side request burst")
	workers := flag.Int("workers", 16, "claims provisioned at once")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("provisioner: kubeconfig: %v", err)
	}
	config.QPS = float32(*qps)
	config.Burst = *burst
	p := &provisioner{slots: make(chan struct{}, max(*workers, 1)), client: kubernetes.NewForConfigOrDie(config), name: *name, baseDir: *baseDir, resizeDelay: *resizeDelay}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	factory := informers.NewSharedInformerFactory(p.client, 10*time.Minute)
	// The classes first: a claim is served only once its class is known.
	p.classes = factory.Storage().V1().StorageClasses().Lister()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	volumes := factory.Core().V1().PersistentVolumes().Informer()
	_, _ = claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { p.serveAsync(ctx, obj) },
		UpdateFunc: func(_, obj interface{}) { p.serveAsync(ctx, obj) },
	})
	_, _ = volumes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { p.reclaim(ctx, obj) },
		UpdateFunc: func(_, obj interface{}) { p.reclaim(ctx, obj) },
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	log.Printf("provisioner: serving the StorageClasses of provisioner %s", p.name)
	<-ctx.Done()
}

// serveAsync provisions or grows in the background, blocking the informer only while
// every slot is taken: one create at a time made the volumes, not the API server, the
// limit of large runs. Two passes over one claim are harmless: the second provisioning
// gets AlreadyExists, and a claim is resized once at a time.
func (p *provisioner) serveAsync(ctx context.Context, obj interface{}) {
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok || claim.DeletionTimestamp != nil {
		return
	}
	class := p.servedClass(claim)
	if class == nil {
		return
	}
	if claim.Spec.VolumeName != "" {
		p.resizeAsync(ctx, claim, class)
		return
	}
	if claim.Annotations[storageProvisioner] != p.name && claim.Annotations[betaStorageProvisioner] != p.name {
		return
	}
	p.slots <- struct{}{}
	go func() {
		defer func() { <-p.slots }()
		p.provision(ctx, claim, class.Name)
	}()
}

// servedClass is the claim's StorageClass if this provisioner serves it.
func (p *provisioner) servedClass(claim *corev1.PersistentVolumeClaim) *storagev1.StorageClass {
	if claim.Spec.StorageClassName == nil {
		return nil
	}
	class, err := p.classes.Get(*claim.Spec.StorageClassName)
	if err != nil || class.Provisioner != p.name {
		return nil
	}
	return class
}

func (p *provisioner) provision(ctx context.Context, claim *corev1.PersistentVolumeClaim, class string) {
	size, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return
	}
	pvName := fmt.Sprintf("pvc-%s", claim.UID)
	dir := filepath.Join(p.baseDir, pvName)
	// Pods on the real test node run non-root and a hostPath volume ignores fsGroup: the
	// directory is made writable for any uid, as a freshly formatted volume would be.
	if err := os.MkdirAll(dir, 0o777); err != nil {
		log.Printf("provisioner: create %s: %v", dir, err)
		return
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		log.Printf("provisioner: chmod %s: %v", dir, err)
		return
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        pvName,
			Annotations: map[string]string{provisionedBy: p.name},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              class,
			ClaimRef: &corev1.ObjectReference{
				Kind:       "PersistentVolumeClaim",
				Namespace:  claim.Namespace,
				Name:       claim.Name,
				UID:        claim.UID,
				APIVersion: "v1",
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir},
			},
		},
	}
	_, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	switch {
	case err == nil:
		log.Printf("provisioner: created %s for %s/%s", pvName, claim.Namespace, claim.Name)
	case apierrors.IsAlreadyExists(err):
	default:
		log.Printf("provisioner: create %s: %v", pvName, err)
	}
}

func (p *provisioner) reclaim(ctx context.Context, obj interface{}) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Annotations[provisionedBy] != p.name || pv.Status.Phase != corev1.VolumeReleased {
		return
	}
	// A retained volume keeps its data for whoever binds it next (spec.redis.retainStorage).
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		return
	}
	err := p.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		log.Printf("provisioner: delete %s: %v", pv.Name, err)
	}
}

// resizeAsync grows the claim's volume when the claim asks for more than it holds and its
// class allows expansion, as an external resizer does: the claim is marked as resizing,
// the volume grows (here: its recorded capacity; a hostPath has no size), and the claim's
// status then reports the new capacity.
func (p *provisioner) resizeAsync(ctx context.Context, claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass) {
	want, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok || claim.Status.Phase != corev1.ClaimBound || class.AllowVolumeExpansion == nil || !*class.AllowVolumeExpansion {
		return
	}
	has := claim.Status.Capacity[corev1.ResourceStorage]
	if want.Cmp(has) <= 0 {
		return
	}
	if _, busy := p.resizing.LoadOrStore(claim.UID, true); busy {
		return
	}
	p.slots <- struct{}{}
	go func() {
		defer func() { <-p.slots }()
		defer p.resizing.Delete(claim.UID)
		if err := p.resize(ctx, claim.Namespace, claim.Name, want); err != nil {
			log.Printf("provisioner: resize %s/%s: %v", claim.Namespace, claim.Name, err)
		}
	}()
}

func (p *provisioner) resize(ctx context.Context, namespace, name string, want resource.Quantity) error {
	claims := p.client.CoreV1().PersistentVolumeClaims(namespace)
	claim, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	volume, err := p.client.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if volume.Annotations[provisionedBy] != p.name {
		return nil
	}
	claim.Status.Conditions = withoutResizeConditions(claim.Status.Conditions)
	claim.Status.Conditions = append(claim.Status.Conditions, corev1.PersistentVolumeClaimCondition{
		Type:               corev1.PersistentVolumeClaimResizing,
		Status:             corev1.ConditionTrue,
		LastTransitionTime: metav1.Now(),
	})
	claim.Status.AllocatedResources = corev1.ResourceList{corev1.ResourceStorage: want}
	claim.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{
		corev1.ResourceStorage: corev1.PersistentVolumeClaimControllerResizeInProgress,
	}
	if claim, err = claims.UpdateStatus(ctx, claim, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("mark as resizing: %w", err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(p.resizeDelay):
	}
	if volume.Spec.Capacity == nil {
		volume.Spec.Capacity = corev1.ResourceList{}
	}
	volume.Spec.Capacity[corev1.ResourceStorage] = want
	if _, err := p.client.CoreV1().PersistentVolumes().Update(ctx, volume, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("grow %s: %w", volume.Name, err)
	}
	if claim.Status.Capacity == nil {
		claim.Status.Capacity = corev1.ResourceList{}
	}
	claim.Status.Capacity[corev1.ResourceStorage] = want
	claim.Status.Conditions = withoutResizeConditions(claim.Status.Conditions)
	delete(claim.Status.AllocatedResourceStatuses, corev1.ResourceStorage)
	if _, err := claims.UpdateStatus(ctx, claim, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("report the new capacity: %w", err)
	}
	log.Printf("provisioner: grew %s for %s/%s to %s", volume.Name, namespace, name, want.String())
	return nil
}

func withoutResizeConditions(conditions []corev1.PersistentVolumeClaimCondition) []corev1.PersistentVolumeClaimCondition {
	kept := conditions[:0:0]
	for _, c := range conditions {
		if c.Type != corev1.PersistentVolumeClaimResizing && c.Type != corev1.PersistentVolumeClaimFileSystemResizePending {
			kept = append(kept, c)
		}
	}
	return kept
}
