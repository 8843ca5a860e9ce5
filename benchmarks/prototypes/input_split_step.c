/* A prototype of the next training step for the fused trainer (issue 12),
 * timed side by side with the library's own sn_mlp_train_f32: a 784-128-10
 * Adam step on two threads in one parallel region, split by the *inputs* of
 * the first layer, so that what a thread writes is what it reads next step:
 *   thread t gathers its columns K_t of the batch (0-383 or 384-783),
 *   computes the partial product xb[:, K_t] @ W1[K_t, :] (barrier), adds the
 *   two partials for its half of the batch rows with bias and ReLU, the second
 *   layer, the loss and dZ1 for those rows (barrier), then dW1[K_t, :] from
 *   its own columns of the batch, and Adam on W1[K_t, :]: the rows of W1,
 *   dW1 and the optimizer state it owns never leave its core.
 * The library's trainer splits each GEMM by column strips and the optimizer
 * by flat halves, so every step half of W1 and dW1 crosses between cores.
 *
 * Not part of the library: no dropout, no other layer counts, 2 threads only.
 * CHECK=n runs n steps of both from the same weights and prints the largest
 * weight difference (sums in another order: about 1e-6 of weights ~0.05).
 *
 * Build and run from the repository root:
 *   gcc -O3 -std=c11 -fno-math-errno -fopenmp -Icsrc \
 *       benchmarks/prototypes/input_split_step.c csrc/*.c -lm -o /tmp/input_split
 *   GOMP_SPINCOUNT=200000 /tmp/input_split       # TEAM=1: the library's thread probe on
 * Measured 2026-11-26 on the AMD EPYC (Zen 3, 2 vCPUs): 1.30x and 1.32x the
 * library's step when the cross-core ping-pong was slow (about 450 ns), 1.05-1.06x
 * when it was fast (about 100 ns); CHECK=20: loss equal to 6 digits, weights
 * within 1.1e-6. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include "scratchnet.h"
#include "sn_internal.h"
#include "sn_fpmode.h"
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static int cmpd(const void*x,const void*y){double a=*(double*)x,b=*(double*)y;return a<b?-1:a>b;}
static float*zf(int64_t n){float*p=aligned_alloc(64,((n*4+63)/64)*64);memset(p,0,((n*4+63)/64)*64);return p;}
enum{IN=784,H=128,O=10,B=128,SPLIT=384};
typedef struct{float*W1,*b1,*W2,*b2,*dW1,*db1,*dW2,*db2,*m1,*v1,*mb1,*vb1,*m2,*v2,*mb2,*vb2,*xb,*P[2],*Y1,*Y2,*dZ2,*dZ1; int64_t*yb; int64_t step;} proto;
static void init_w(float*W,int64_t n,unsigned s){for(int64_t i=0;i<n;i++){s=s*1664525u+1013904223u;W[i]=((s>>8&0xffff)/65536.0f-0.5f)*0.1f;}}
static void adam(float*p,float*m,float*v,const float*g,int64_t n,int64_t step){sn_adam_step_f32(p,m,v,g,n,1e-3f,0.9f,0.999f,1e-8f,0.0f,step,0);}
static double proto_train(proto*P,const float*X,const int64_t*labels,const int64_t*order,int64_t n){
  double loss=0; int64_t steps=n/B;
  for(int64_t s=0;s<steps;s++){ const int64_t*ord=order+s*B; double lt[2]={0,0}; int64_t ct[2]; int okv[2]={1,1}; P->step++;
#pragma omp parallel num_threads(2)
  { const int t=omp_get_thread_num(); const int64_t k0=t?SPLIT:0,k1=t?IN:SPLIT,r0=t*64,r1=r0+64;
    const unsigned fp=sn_fp_enter();
    for(int64_t i=0;i<B;i++){ memcpy(P->xb+i*IN+k0, X+ord[i]*IN+k0,(k1-k0)*4); if(t==0) P->yb[i]=labels[ord[i]]; }
    sn_gemm_serial_f32(0,0,B,H,k1-k0,1.0f,P->xb+k0,IN,P->W1+k0*H,H,0.0f,P->P[t],H,NULL);
#pragma omp barrier
    for(int64_t r=r0;r<r1;r++) for(int j=0;j<H;j++){ float z=P->P[0][r*H+j]+P->P[1][r*H+j]+P->b1[j]; P->Y1[r*H+j]=z>0?z:0; }
    sn_gemm_serial_f32(0,0,64,O,H,1.0f,P->Y1+r0*H,H,P->W2,O,0.0f,P->Y2+r0*O,O,NULL);
    sn_bias_add_f32(P->Y2+r0*O,O,P->b2,64,O);
    sn_xent_train_f32(&lt[t],&ct[t],P->dZ2+r0*O,P->Y2+r0*O,P->yb+r0,64,O,1.0f/B);
    sn_gemm_serial_f32(0,1,64,H,O,1.0f,P->dZ2+r0*O,O,P->W2,O,0.0f,P->dZ1+r0*H,H,NULL);
    for(int64_t r=r0;r<r1;r++) for(int j=0;j<H;j++) if(!(P->Y1[r*H+j]>0)) P->dZ1[r*H+j]=0;
#pragma omp barrier
    sn_gemm_serial_f32(1,0,k1-k0,H,B,1.0f,P->xb+k0,IN,P->dZ1,H,0.0f,P->dW1+k0*H,H,NULL);
    if(t==0){ sn_gemm_serial_f32(1,0,H,O,B,1.0f,P->Y1,H,P->dZ2,O,0.0f,P->dW2,O,NULL); sn_bias_grad_f32(P->db2,P->dZ2,O,B,O,0.0f);} 
    else sn_bias_grad_f32(P->db1,P->dZ1,H,B,H,0.0f);
    okv[t]=sn_all_finite_f32(P->dW1+k0*H,(k1-k0)*H) && (t? sn_all_finite_f32(P->db1,H) : sn_all_finite_f32(P->dW2,H*O)&&sn_all_finite_f32(P->db2,O));
#pragma omp barrier
    if(okv[0]&&okv[1]){ adam(P->W1+k0*H,P->m1+k0*H,P->v1+k0*H,P->dW1+k0*H,(k1-k0)*H,P->step);
      if(t==0){adam(P->W2,P->m2,P->v2,P->dW2,H*O,P->step);adam(P->b2,P->mb2,P->vb2,P->db2,O,P->step);} else adam(P->b1,P->mb1,P->vb1,P->db1,H,P->step);}
    sn_fp_leave(fp);
  }
  loss+=lt[0]+lt[1]; }
  return loss;
}
int main(void){
  sn_runtime_init(); sn_set_isa(sn_isa_best()); sn_set_num_threads(2);
  float*X=aligned_alloc(1<<21,(60000L*IN*4+(1<<21)-1)/(1<<21)*(1<<21)); int64_t*y=malloc(60000*8),*order=malloc(60000*8); unsigned s=3;
  for(int64_t i=0;i<60000L*IN;i++){s=s*1664525u+1013904223u;X[i]=(s>>8&0xff)/255.0f;}
  for(int64_t i=0;i<60000;i++){y[i]=(i*7)%10;order[i]=(i*7919)%60000;}
  proto P; memset(&P,0,sizeof P);
  P.W1=zf(IN*H);P.b1=zf(H);P.W2=zf(H*O);P.b2=zf(O);P.dW1=zf(IN*H);P.db1=zf(H);P.dW2=zf(H*O);P.db2=zf(O);
  P.m1=zf(IN*H);P.v1=zf(IN*H);P.mb1=zf(H);P.vb1=zf(H);P.m2=zf(H*O);P.v2=zf(H*O);P.mb2=zf(O);P.vb2=zf(O);
  P.xb=zf(B*IN);P.P[0]=zf(B*H);P.P[1]=zf(B*H);P.Y1=zf(B*H);P.Y2=zf(B*O);P.dZ2=zf(B*O);P.dZ1=zf(B*H);P.yb=calloc(B,8);
  init_w(P.W1,IN*H,1);init_w(P.W2,H*O,2);
  /* baseline: the library's fused trainer, same initial weights */
  sn_mlp_layer L[2]; memset(L,0,sizeof L); sn_param Q[4]; sn_team_choice team; memset(&team,0,sizeof team);
  L[0].in=IN;L[0].out=H;L[0].W=zf(IN*H);L[0].b=zf(H);L[0].dW=zf(IN*H);L[0].db=zf(H);L[0].act=SN_ACT_RELU;L[0].y=zf(B*H);L[0].dz=zf(B*H);
  L[1].in=H;L[1].out=O;L[1].W=zf(H*O);L[1].b=zf(O);L[1].dW=zf(H*O);L[1].db=zf(O);L[1].act=SN_ACT_NONE;L[1].y=zf(B*O);L[1].dz=zf(B*O);
  memcpy(L[0].W,P.W1,IN*H*4);memcpy(L[1].W,P.W2,H*O*4);
  Q[0]=(sn_param){L[0].W,L[0].dW,{zf(IN*H),zf(IN*H),NULL},IN*H};Q[1]=(sn_param){L[0].b,L[0].db,{zf(H),zf(H),NULL},H};
  Q[2]=(sn_param){L[1].W,L[1].dW,{zf(H*O),zf(H*O),NULL},H*O};Q[3]=(sn_param){L[1].b,L[1].db,{zf(O),zf(O),NULL},O};
  sn_mlp net={2,L,B,zf(B*IN),calloc(B,8),Q,getenv("TEAM")?&team:NULL};
  sn_optim_cfg opt; memset(&opt,0,sizeof opt); opt.kind=SN_OPT_ADAM;opt.lr=1e-3;opt.beta1=0.9f;opt.beta2=0.999f;opt.eps=1e-8f;
  if(getenv("CHECK")){ double ls=0;int64_t c=0; int64_t steps=atoi(getenv("CHECK"));
    double l0=proto_train(&P,X,y,order,steps*B); sn_mlp_train_f32(&net,&opt,X,y,O,order,steps*B,B,&ls,&c);
    double md=0,mx=0,md2=0; for(int64_t i=0;i<IN*H;i++){double d=fabs(P.W1[i]-L[0].W[i]); if(d>md)md=d; if(fabs(L[0].W[i])>mx)mx=fabs(L[0].W[i]);}
    for(int64_t i=0;i<H*O;i++){double d=fabs(P.W2[i]-L[1].W[i]); if(d>md2)md2=d;}
    double mb=0; for(int i=0;i<H;i++){double d=fabs(P.b1[i]-L[0].b[i]); if(d>mb)mb=d;}
    printf("after %lld steps: loss %.6f vs %.6f; max |dW1| %.3g (max |W1| %.3g), max |dW2| %.3g, max |db1| %.3g\n",(long long)steps,l0,ls,md,mx,md2,mb); return 0; }
  const int64_t n=12800; double t[2][21]; double lp=0,lb=0;
  for(int q=-1;q<21;q++){ const int64_t*o=order+((q+1)*n)%40000;
    double t0=now(); double l0=proto_train(&P,X,y,o,n); double t1=now();
    double ls=0; int64_t c=0; sn_mlp_train_f32(&net,&opt,X,y,O,o,n,B,&ls,&c); double t2=now();
    if(q>=0){t[0][q]=t1-t0;t[1][q]=t2-t1;} lp=l0; lb=ls; }
  double r[21]; for(int q=0;q<21;q++) r[q]=t[1][q]/t[0][q]; qsort(r,21,8,cmpd);
  for(int v=0;v<2;v++) qsort(t[v],21,8,cmpd);
  printf("input-split prototype %.1f us/step | library trainer %.1f us/step | speed-up %.3fx (q1 %.3f q3 %.3f) | last round loss sums %.4f vs %.4f\n",
         t[0][10]/(n/B)*1e6,t[1][10]/(n/B)*1e6,r[10],r[5],r[15],lp,lb);
}
